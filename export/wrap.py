"""The Grad-CAM head: one TensorFlow function returning scores, maps, gradients and the CAM.

The classifier is split at the target layer into `body` (pixels -> feature maps) and
`head` (feature maps -> logits). The body runs once per image; the head runs once per
(image, explained class) on repeated feature maps, and the gradient of each target's score
flows back through the head only. Seeding the gradient with a one-hot `output_gradients`
(rather than differentiating sum(logits * one_hot)) keeps BroadcastGradientArgs, which
tf2onnx cannot convert, out of the graph.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from export import contract
from export.errors import ExportError
from export.preprocessing import PREPROCESSING


def resolve_layer(model: keras.Model, layer: str) -> str:
    """`auto` -> the last layer with a 4-D output whose spatial size is > 1; else check `layer`."""
    if layer != "auto":
        try:
            shape = model.get_layer(layer).output.shape
        except ValueError:
            raise ExportError(
                f"--layer {layer}: no such layer; candidates: {', '.join(spatial_layers(model)[-5:])}"
            ) from None
        if len(shape) != 4:
            raise ExportError(f"--layer {layer}: output {tuple(shape)} is not [N, h, w, C]")
        return layer
    candidates = spatial_layers(model)
    if not candidates:
        raise ExportError("the model has no layer with a [N, h, w, C] output to explain")
    return candidates[-1]


def spatial_layers(model: keras.Model) -> list[str]:
    """Names of the layers whose output is [N, h, w, C] with h * w > 1, in model order."""
    names = []
    for layer in model.layers:
        shape = getattr(layer, "output", None) is not None and layer.output.shape
        if shape and len(shape) == 4 and shape[1] and shape[2] and shape[1] * shape[2] > 1:
            names.append(layer.name)
    return names


def split(model: keras.Model, layer: str) -> tuple[keras.Model, keras.Model]:
    """Split `model` into body (inputs -> layer output) and head (layer output -> logits)."""
    feature_maps = model.get_layer(layer).output
    body = keras.Model(model.inputs, feature_maps)
    try:
        head = keras.Model(feature_maps, model.output)
    except Exception as error:
        raise ExportError(
            f"--layer {layer}: the layers after it also need other inputs (a skip connection "
            f"crosses it), pick a block output ({' '.join(str(error).split())[:150]})"
        ) from None
    return body, head


def gradcam_function(
    body: keras.Model, head: keras.Model, preprocessing: str, score: str, input_size: tuple[int, int]
) -> tf.types.experimental.GenericFunction:
    """The tf.function that becomes the ONNX graph (names from `contract`)."""
    preprocess: Callable[[tf.Tensor], tf.Tensor] = PREPROCESSING[preprocessing]
    height, width = input_size

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, height, width, 3], tf.float32, name=contract.INPUT_IMAGE),
            tf.TensorSpec([None, None], tf.int64, name=contract.INPUT_CLASS_INDEX),
        ],
        autograph=False,
    )
    def explain(image: tf.Tensor, class_index: tf.Tensor) -> dict[str, tf.Tensor]:
        feature_maps = body(preprocess(image), training=False)
        logits = head(feature_maps, training=False)
        probabilities = tf.nn.softmax(logits)

        images = tf.shape(class_index, out_type=tf.int64)[0]
        targets_per_image = tf.shape(class_index, out_type=tf.int64)[1]
        top = tf.cast(tf.math.top_k(logits, k=tf.cast(targets_per_image, tf.int32)).indices, tf.int64)
        explained_class = tf.where(class_index < 0, top, class_index)

        # One row per (image, target): row r belongs to image r // K.
        rows = tf.range(images * targets_per_image) // targets_per_image
        repeated_maps = tf.gather(feature_maps, rows)
        one_hot = tf.one_hot(tf.reshape(explained_class, [-1]), depth=logits.shape[-1])
        with tf.GradientTape() as tape:
            tape.watch(repeated_maps)
            target_outputs = head(repeated_maps, training=False)
            if score == "probability":
                target_outputs = tf.nn.softmax(target_outputs)
        gradients = tape.gradient(target_outputs, repeated_maps, output_gradients=one_hot)
        target_score = tf.reduce_sum(tf.stop_gradient(target_outputs) * one_hot, axis=-1)

        _, h, w, channels = feature_maps.shape
        grid = tf.stack([images, targets_per_image, h, w, channels])
        gradients = tf.reshape(gradients, grid)
        pooled = tf.reduce_mean(gradients, axis=[2, 3])
        flat_maps = tf.reshape(feature_maps, tf.stack([images, h * w, channels]))
        cam = tf.nn.relu(tf.linalg.matmul(pooled, flat_maps, transpose_b=True))
        return {
            contract.OUTPUT_PROBABILITIES: tf.identity(probabilities),
            contract.OUTPUT_EXPLAINED_CLASS: tf.identity(explained_class),
            contract.OUTPUT_SCORE: tf.reshape(target_score, tf.shape(class_index)),
            contract.OUTPUT_FEATURE_MAPS: tf.identity(feature_maps),
            contract.OUTPUT_GRADIENTS: gradients,
            contract.OUTPUT_POOLED_GRADIENTS: pooled,
            contract.OUTPUT_CAM: tf.reshape(cam, tf.stack([images, targets_per_image, h, w])),
        }

    return explain

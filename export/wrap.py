"""The Grad-CAM head: one TensorFlow function returning scores, maps, gradients and the CAM.

The classifier is split at the (first) target layer into `body` (pixels -> feature maps)
and `head` (feature maps -> the other target layers' maps and the logits). The body runs
once per image; the head runs once per (image, explained class) on repeated feature maps,
and nowhere else: each image's first row gives its predictions, so a nonlinear head (VGG16's
dense layers, MobileNetV3's hard-swish) is not run twice, and with one class per image the
graph does the classifier's forward work once. The gradient of each target's score flows back
through the head only. Seeding the gradient with a one-hot `output_gradients` (rather than
differentiating sum(logits * one_hot)) keeps BroadcastGradientArgs, which tf2onnx cannot
convert, out of the graph.
"""

from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from . import contract
from .errors import ExportError, one_line
from .preprocessing import PREPROCESSING


def resolve_layers(model: keras.Model, layers: str) -> list[str]:
    """`auto` -> the layer feeding global pooling: walking back from the output, the first
    [N, h, w, C] output with h * w > 1 (not "the last Conv2D", which in MobileNetV3 is a 1x1
    classifier after the pooling). Else each name of the comma-separated list, checked.
    Names are those of the model's operations: layers, and ops such as a residual `add`.
    The result is in model order."""
    if layers == "auto":
        return [_feeding_global_pooling(model)]
    names = [name.strip() for name in layers.split(",") if name.strip()]
    if not names or len(set(names)) != len(names):
        raise ExportError(f"--layer {layers}: give one or more different layer names, or auto")
    operations = {operation.name: operation for operation in model.operations}
    for name in names:
        if name not in operations:
            raise ExportError(
                f"--layer {name}: no such layer; candidates: {', '.join(spatial_layers(model)[-5:])}"
            )
        if isinstance(operations[name], keras.layers.InputLayer):
            raise ExportError(f"--layer {name}: that is the model's input; pick a layer inside the model")
        if not _is_spatial(operations[name].output.shape):
            raise ExportError(f"--layer {name}: output {tuple(operations[name].output.shape)} is not [N, h, w, C]")
    order = list(operations)
    return sorted(names, key=order.index)


def spatial_layers(model: keras.Model) -> list[str]:
    """Names of the operations whose output is [N, h, w, C] with h * w > 1, in model order."""
    names = []
    for operation in model.operations:
        output = getattr(operation, "output", None)
        if output is not None and _is_spatial(output.shape) and not isinstance(operation, keras.layers.InputLayer):
            names.append(operation.name)
    return names


def _is_spatial(shape: tuple | None) -> bool:
    return bool(shape) and len(shape) == 4 and bool(shape[1]) and bool(shape[2]) and shape[1] * shape[2] > 1


def _feeding_global_pooling(model: keras.Model) -> str:
    tensor = model.output
    while True:
        history = tensor._keras_history  # Keras' record of the operation that made this tensor
        if isinstance(history.operation, keras.layers.InputLayer):
            raise ExportError(
                "the model has no layer with a [N, h, w, C] output between its input and its output "
                "(nothing spatial to explain); give one with --layer"
            )
        if _is_spatial(tensor.shape):
            return history.operation.name
        inputs = history.operation._inbound_nodes[history.node_index].input_tensors
        if not inputs:
            raise ExportError("the model has no layer with a [N, h, w, C] output to explain")
        tensor = inputs[0]


def split(model: keras.Model, layers: list[str]) -> tuple[keras.Model, keras.Model]:
    """Body: inputs -> first layer's maps. Head: those maps -> [later layers' maps..., logits]."""
    operations = {operation.name: operation for operation in model.operations}
    first = operations[layers[0]].output
    later = [operations[name].output for name in layers[1:]]
    body = keras.Model(model.inputs, first)
    try:
        head = keras.Model(first, [*later, model.output])
    except Exception as error:
        raise ExportError(
            f"--layer {layers[0]}: the layers after it also need other inputs (a skip connection "
            f"crosses it), pick a block output ({one_line(error, 150)})"
        ) from None
    return body, head


SQUASH: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {"softmax": tf.nn.softmax, "sigmoid": tf.sigmoid}

LINEAR_LAYERS = (
    keras.layers.InputLayer, keras.layers.GlobalAveragePooling2D, keras.layers.AveragePooling2D,
    keras.layers.Flatten, keras.layers.Reshape, keras.layers.Dropout, keras.layers.Add,
    keras.layers.BatchNormalization, keras.layers.Rescaling,
)


def is_linear(head: keras.Model) -> bool:
    """Whether the head is affine in its input maps (average pooling, dense/conv without
    activation, inference BatchNorm...): then d logits / d maps does not depend on the maps."""
    for operation in head.operations:
        activation = getattr(operation, "activation", None)
        if isinstance(operation, (keras.layers.Dense, keras.layers.Conv2D)):
            if activation is not None and getattr(activation, "__name__", "") != "linear":
                return False
        elif not isinstance(operation, LINEAR_LAYERS):
            return False
    return True


def _outputs(head: keras.Model, maps: tf.Tensor) -> list[tf.Tensor]:
    outputs = head(maps, training=False)
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def gradcam_function(
    body: keras.Model, head: keras.Model, preprocessing: str, score: str, input_size: tuple[int, int],
    activation: str = "softmax",
) -> tf.types.experimental.GenericFunction:
    """The tf.function that becomes the ONNX graph (names from `contract`). `activation` turns
    logits into probabilities: softmax over the classes, or a sigmoid per class (multi-label)."""
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
        first_maps = body(preprocess(image), training=False)
        images = tf.shape(class_index, out_type=tf.int64)[0]
        targets_per_image = tf.shape(class_index, out_type=tf.int64)[1]
        # One row per (image, target): row r belongs to image r // K. The head runs once, on
        # these rows; each image's first row gives its predictions.
        rows = tf.range(images * targets_per_image) // targets_per_image
        first_rows = tf.range(images) * targets_per_image
        repeated = tf.gather(first_maps, rows)
        with tf.GradientTape() as tape:
            tape.watch(repeated)
            *repeated_later, repeated_logits = _outputs(head, repeated)
            repeated_scores = repeated_logits
            if score == "probability" and activation == "softmax":
                repeated_scores = tf.nn.softmax(repeated_logits)
        logits = tf.gather(repeated_logits, first_rows)
        later_maps = [tf.gather(maps, first_rows) for maps in repeated_later]
        probabilities = SQUASH[activation](logits)

        top = tf.cast(tf.math.top_k(logits, k=tf.cast(targets_per_image, tf.int32)).indices, tf.int64)
        explained_class = tf.where(class_index < 0, top, class_index)
        one_hot = tf.one_hot(tf.reshape(explained_class, [-1]), depth=logits.shape[-1])
        if score == "probability" and activation == "sigmoid":
            # d sigmoid(z_c) = p_c (1 - p_c) d z_c, chained by hand: tf2onnx cannot convert SigmoidGrad.
            repeated_scores = tf.sigmoid(repeated_logits)
            differentiated, seed = repeated_logits, one_hot * repeated_scores * (1 - repeated_scores)
        else:
            differentiated, seed = repeated_scores, one_hot
        all_gradients = tape.gradient(differentiated, [repeated, *repeated_later], output_gradients=seed)
        target_score = tf.reduce_sum(repeated_scores * one_hot, axis=-1)
        outputs = {
            contract.OUTPUT_PROBABILITIES: tf.identity(probabilities),
            contract.OUTPUT_EXPLAINED_CLASS: tf.identity(explained_class),
            contract.OUTPUT_SCORE: tf.reshape(target_score, tf.shape(class_index)),
        }
        for index, (maps, gradients) in enumerate(zip([first_maps, *later_maps], all_gradients)):
            for name, value in _layer_outputs(maps, gradients, images, targets_per_image).items():
                outputs[contract.layer_output(name, index)] = value
        return outputs

    return explain


def plain_function(
    model: keras.Model, preprocessing: str, input_size: tuple[int, int], activation: str = "softmax"
) -> tf.types.experimental.GenericFunction:
    """The classifier alone (raw pixels -> probabilities): the baseline for size and speed."""
    preprocess = PREPROCESSING[preprocessing]

    @tf.function(
        input_signature=[tf.TensorSpec([None, *input_size, 3], tf.float32, name=contract.INPUT_IMAGE)],
        autograph=False,
    )
    def classify(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {contract.OUTPUT_PROBABILITIES: SQUASH[activation](model(preprocess(image), training=False))}

    return classify


def _layer_outputs(
    maps: tf.Tensor, gradients: tf.Tensor, images: tf.Tensor, targets_per_image: tf.Tensor
) -> dict[str, tf.Tensor]:
    """One layer's feature maps, gradients [N, K, h, w, C], pooled gradients and CAM."""
    _, h, w, channels = maps.shape
    gradients = tf.reshape(gradients, tf.stack([images, targets_per_image, h, w, channels]))
    pooled = tf.reduce_mean(gradients, axis=[2, 3])
    flat_maps = tf.reshape(maps, tf.stack([images, h * w, channels]))
    cam = tf.nn.relu(tf.linalg.matmul(pooled, flat_maps, transpose_b=True))
    return {
        contract.OUTPUT_FEATURE_MAPS: tf.identity(maps),
        contract.OUTPUT_GRADIENTS: gradients,
        contract.OUTPUT_POOLED_GRADIENTS: pooled,
        contract.OUTPUT_CAM: tf.reshape(cam, tf.stack([images, targets_per_image, h, w])),
    }

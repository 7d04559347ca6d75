"""The seed recipe in TensorFlow: keras.io's Grad-CAM (https://keras.io/examples/vision/grad_cam/),
eager, and a tf.function version as a careful TF user would write it. Imports TensorFlow."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

LAYER = "conv5_block3_out"
INPUT_SIZE = (224, 224)


def resnet50(weights: str | None = None) -> keras.Model:
    """keras.io's model: ResNet50 with the last layer's softmax removed (the score is the logit).
    weights None: random, seeded as `python -m export.build --weights none` seeds them."""
    if weights is None:
        keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=weights)
    model.layers[-1].activation = None
    return model


def make_gradcam_heatmap(img_array: np.ndarray, model: keras.Model, last_conv_layer_name: str) -> np.ndarray:
    """keras.io's `make_gradcam_heatmap` for the top class, with its per-image steps taken per row
    of the batch (argmax per row, gradients pooled over h and w only); at batch 1 it is keras.io's
    function, grad_model built on every call included. [N, h, w] heatmaps in 0..1."""
    grad_model = keras.models.Model(model.inputs, [model.get_layer(last_conv_layer_name).output, model.output])
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(img_array)
        pred_index = tf.argmax(preds, axis=1)
        class_channel = tf.gather(preds, pred_index, axis=1, batch_dims=1)
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(1, 2))
    heatmap = tf.einsum("nhwc,nc->nhw", last_conv_layer_output, pooled_grads)
    heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap, axis=(1, 2), keepdims=True)
    return heatmap.numpy()


def eager_recipe(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """Raw 0..255 RGB [N, 224, 224, 3] -> heatmaps: keras.io's preprocess_input, then the recipe."""

    def explain(images: np.ndarray) -> np.ndarray:
        pixels = keras.applications.resnet50.preprocess_input(images.copy())  # it works in place
        return make_gradcam_heatmap(pixels, model, LAYER)

    return explain


def function_recipe(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """The same Grad-CAM as one batched tf.function (input signature, no XLA): grad_model built
    once, preprocessing inside the graph, one tape for the batch."""
    grad_model = keras.Model(model.inputs, [model.get_layer(LAYER).output, model.output])

    @tf.function(input_signature=[tf.TensorSpec([None, *INPUT_SIZE, 3], tf.float32)], jit_compile=False)
    def gradcam(images: tf.Tensor) -> tf.Tensor:
        pixels = keras.applications.resnet50.preprocess_input(images)
        with tf.GradientTape() as tape:
            feature_maps, logits = grad_model(pixels, training=False)
            scores = tf.gather(logits, tf.argmax(logits, axis=1), axis=1, batch_dims=1)
        pooled = tf.reduce_mean(tape.gradient(scores, feature_maps), axis=(1, 2))
        heatmap = tf.nn.relu(tf.einsum("nhwc,nc->nhw", feature_maps, pooled))
        return heatmap / tf.maximum(tf.reduce_max(heatmap, axis=(1, 2), keepdims=True), 1e-7)

    return lambda images: gradcam(images).numpy()

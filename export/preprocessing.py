"""What the exported graph does to raw 0..255 RGB pixels before the network, in TensorFlow ops.

The numbers are Keras' own (`keras.applications.imagenet_utils.preprocess_input`); the
self-check compares against that Keras function, so a slip here cannot go unnoticed.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def _caffe(rgb: tf.Tensor) -> tf.Tensor:
    to_bgr = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]  # exact: 1·x + 0·y + 0·z
    return _per_channel(rgb, to_bgr, [-mean for mean in _CAFFE_BGR_MEAN])


def _tf(rgb: tf.Tensor) -> tf.Tensor:
    return rgb / 127.5 - 1.0


def _torch(rgb: tf.Tensor) -> tf.Tensor:
    scale = [[1.0 / (255.0 * std) if i == j else 0.0 for j, std in enumerate(_TORCH_STD)] for i in range(3)]
    return _per_channel(rgb, scale, [-mean / std for mean, std in zip(_TORCH_MEAN, _TORCH_STD)])


def _per_channel(rgb: tf.Tensor, matrix: list[list[float]], bias: list[float]) -> tf.Tensor:
    """rgb @ matrix + bias per pixel, as a 1x1 convolution with a bias. Written as a gather
    and a broadcast subtraction over the last axis, tf2onnx's NHWC ops cost onnxruntime
    0.9 ms per 224x224 image (2% of ResNet50); the convolution joins the network's NCHW layout
    (0.3 ms, bias included)."""
    kernel = tf.constant([[matrix]], tf.float32)  # [1, 1, in, out]
    mixed = tf.nn.conv2d(rgb, kernel, strides=1, padding="VALID")
    return tf.nn.bias_add(mixed, tf.constant(bias, tf.float32))


def _none(rgb: tf.Tensor) -> tf.Tensor:
    return rgb


# Constants are created when these run, i.e. inside the traced function: a tensor made
# outside would become an extra required ONNX input.
PREPROCESSING: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "caffe": _caffe,
    "tf": _tf,
    "torch": _torch,
    "none": _none,
}

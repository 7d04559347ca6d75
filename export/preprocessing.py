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
    bgr = tf.gather(rgb, [2, 1, 0], axis=-1)
    return bgr - tf.constant(_CAFFE_BGR_MEAN, tf.float32)


def _tf(rgb: tf.Tensor) -> tf.Tensor:
    return rgb / 127.5 - 1.0


def _torch(rgb: tf.Tensor) -> tf.Tensor:
    return (rgb / 255.0 - tf.constant(_TORCH_MEAN, tf.float32)) / tf.constant(_TORCH_STD, tf.float32)


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

"""export/preprocessing.py against Keras' own preprocess_input, the definition it must match."""

import numpy as np
import pytest
import tensorflow as tf
from keras.applications import imagenet_utils

from export.preprocessing import PREPROCESSING


@pytest.mark.parametrize("mode, tolerance", [("caffe", 0.0), ("tf", 0.0), ("torch", 1e-6)])
def test_matches_keras_preprocess_input(mode, tolerance):
    rgb = np.random.default_rng(3).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    rgb[0, 0, 0] = [0, 128, 255]
    expected = imagenet_utils.preprocess_input(rgb.copy(), mode=mode)
    actual = PREPROCESSING[mode](tf.constant(rgb)).numpy()
    assert actual.shape == expected.shape and actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * np.abs(expected).max())


def test_none_passes_pixels_through():
    rgb = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3)
    np.testing.assert_array_equal(PREPROCESSING["none"](tf.constant(rgb)).numpy(), rgb)

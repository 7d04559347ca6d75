"""A user's own `.keras` classifier: --model PATH --layer --preprocessing --labels."""

from __future__ import annotations

import keras
import numpy as np
import onnxruntime
import pytest

from export import contract
from export.classifier import logits_model
from export.errors import ExportError
from export.verify import reference_outputs, relative_error
from export.wrap import resolve_layers, split
from runtime import Explainer
from tests.keras_models import small_cnn


def test_exports_with_its_flags_and_labels(user_model):
    card = Explainer(user_model.onnx_path, device="cpu").card
    assert list(card.labels) == user_model.labels
    assert card.weights["random"] is False and not card.random_weights
    assert (card.layer, card.preprocessing, card.input_size) == ("block_out", "tf", (48, 48))
    assert "layer: block_out (24x24x16)" in user_model.stdout


@pytest.mark.parametrize("class_index", [[[-1, 2]], [[4, -1], [-1, -1], [0, 1]]])
def test_every_output_matches_tensorflow(user_model, class_index):
    model = logits_model(keras.models.load_model(user_model.keras_path, compile=False))[0]
    session = onnxruntime.InferenceSession(str(user_model.onnx_path), providers=["CPUExecutionProvider"])
    class_index = np.array(class_index, np.int64)
    images = np.random.default_rng(3).uniform(0, 255, (len(class_index), 48, 48, 3)).astype(np.float32)
    actual = dict(zip(contract.OUTPUTS, session.run(list(contract.OUTPUTS), {"image": images, "class_index": class_index})))
    expected = reference_outputs(model, ["block_out"], "tf", "logit", images, class_index)
    for name in contract.OUTPUTS:
        assert relative_error(actual[name], expected[name]) <= 1e-4, name


def test_softmax_head_is_taken_off_for_logits():
    model = small_cnn()
    images = np.random.default_rng(0).uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32)
    probabilities = model(images).numpy()
    logits = logits_model(model)[0](images).numpy()
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), probabilities, rtol=1e-5)


def test_auto_layer_is_the_last_spatial_layer():
    assert resolve_layers(small_cnn(), "auto") == ["last_conv"]


def test_a_layer_that_a_skip_connection_crosses_is_refused_with_a_reason():
    with pytest.raises(ExportError, match="skip connection"):
        split(small_cnn(), ["shortcut"])


def test_an_unknown_layer_lists_candidates():
    with pytest.raises(ExportError, match="no such layer; candidates: .*last_conv"):
        resolve_layers(small_cnn(), "nope")


def test_reference_gives_the_analytic_gradient_of_a_gap_dense_head():
    """For logits = mean_hw(A) @ W + b, d logit_c / d A[i, j, k] = W[k, c] / (h * w)."""
    model = small_cnn()
    kernel = model.get_layer("predictions").kernel.numpy()
    images = np.random.default_rng(1).uniform(0, 255, (2, 48, 48, 3)).astype(np.float32)
    outputs = reference_outputs(logits_model(model)[0], ["last_conv"], "tf", "logit", images, np.array([[1, -1], [3, 0]]))
    expected = kernel.T[outputs["explained_class"]] / (24 * 24)
    np.testing.assert_allclose(outputs["pooled_gradients"], expected, rtol=1e-5)
    maps = outputs["feature_maps"]
    cam = np.maximum(np.einsum("nkc,nhwc->nkhw", expected, maps), 0)
    np.testing.assert_allclose(outputs["cam"], cam, rtol=1e-4, atol=1e-7)


def test_head_linearity_decides_how_strictly_gradients_are_checked():
    from export.verify import relative_limit
    from export.wrap import is_linear

    model, _ = logits_model(small_cnn())
    assert is_linear(split(model, ["last_conv"])[1])  # pooling + dense
    assert not is_linear(split(model, ["block_out"])[1])  # a ReLU conv before the pooling
    assert relative_limit("cam.1", linear_head=True) == 1e-4
    assert relative_limit("cam.1", linear_head=False) == 1e-2
    assert relative_limit("feature_maps", linear_head=False) == 1e-4

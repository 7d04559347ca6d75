"""Sigmoid heads: multi-label classifiers (one sigmoid per class) and binary Dense(1, sigmoid), end
to end, against the Keras model's own output and closed forms in numpy."""

from __future__ import annotations

import json

import keras
import numpy as np
import onnxruntime
import pytest

from export.build import main
from runtime import Explainer

HEIGHT, WIDTH, CHANNELS = 12, 10, 5
MAP_CELLS = (HEIGHT - 2) * (WIDTH - 2)


def _sigmoid_model(units: int, path) -> tuple[keras.Model, keras.Model]:
    """conv (ReLU) -> global average pooling -> Dense(units, sigmoid); also the model up to conv."""
    keras.utils.set_random_seed(2)
    image = keras.Input((HEIGHT, WIDTH, 3))
    features = keras.layers.Conv2D(CHANNELS, 3, activation="relu", name="conv")(image)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(image, keras.layers.Dense(units, activation="sigmoid", name="head")(pooled))
    model.save(path)
    return model, keras.Model(image, features)


def _run(path, pixels: np.ndarray, class_index: np.ndarray) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": pixels, "class_index": class_index})))


PIXELS = np.random.default_rng(0).uniform(0, 255, (3, HEIGHT, WIDTH, 3)).astype(np.float32)
SCALED = PIXELS / 127.5 - 1  # --preprocessing tf: moderate logits, so no sigmoid saturates


@pytest.mark.parametrize("score", ["logit", "probability"])
def test_a_multi_label_head_gives_one_sigmoid_per_class(score, tmp_path, capsys):
    model, features = _sigmoid_model(4, tmp_path / "multi.keras")
    output = tmp_path / "multi.onnx"
    flags = ["--model", str(tmp_path / "multi.keras"), "--preprocessing", "tf", "--score", score]
    assert main([*flags, "--output", str(output)]) == 0, capsys.readouterr().err

    got = _run(output, PIXELS, np.array([[-1, -1, 3]] * 3, np.int64))
    probabilities = model.predict(SCALED, verbose=0).astype(np.float64)  # the user's own sigmoids
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got["probabilities"].sum(1), 1)  # independent, not a softmax
    assert 0.05 < probabilities.min() and probabilities.max() < 0.95  # the gradients are not vanishing
    ranked = np.argsort(-probabilities, axis=1)
    np.testing.assert_array_equal(got["explained_class"][:, :2], ranked[:, :2])
    np.testing.assert_array_equal(got["explained_class"][:, 2], [3, 3, 3])

    kernel, _ = model.get_layer("head").get_weights()
    classes = got["explained_class"]
    p = np.take_along_axis(probabilities, classes, 1)
    factor = p * (1 - p) if score == "probability" else np.ones_like(p)  # d sigmoid = p (1 - p) d logit
    expected_pooled = factor[..., None] * kernel.T[classes] / MAP_CELLS
    scale = np.abs(expected_pooled).max()
    np.testing.assert_allclose(got["pooled_gradients"], expected_pooled, rtol=1e-4, atol=1e-4 * scale)
    maps = features.predict(SCALED, verbose=0)
    np.testing.assert_allclose(got["feature_maps"], maps, rtol=1e-5, atol=1e-5 * np.abs(maps).max())

    explainer = Explainer(str(output), device="cpu")
    assert explainer.card.activation == "sigmoid" and explainer.card.score == score
    result = explainer.explain(PIXELS[0].astype(np.uint8), top_k=2, explain_top=2)
    assert [c.index for c in result.predictions] == ranked[0, :2].tolist()


def test_a_binary_sigmoid_unit_becomes_two_classes(tmp_path, capsys):
    model, _ = _sigmoid_model(1, tmp_path / "binary.keras")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["pneumonia"]))
    output = tmp_path / "binary.onnx"
    flags = ["--model", str(tmp_path / "binary.keras"), "--preprocessing", "tf", "--labels", str(labels)]
    assert main([*flags, "--output", str(output)]) == 0, capsys.readouterr().err

    got = _run(output, PIXELS, np.array([[1, 0]] * 3, np.int64))
    p = model.predict(SCALED, verbose=0)[:, 0].astype(np.float64)
    np.testing.assert_allclose(got["probabilities"], np.stack([1 - p, p], axis=1), rtol=1e-5, atol=1e-6)
    kernel = model.get_layer("head").get_weights()[0][:, 0] / MAP_CELLS
    expected = np.broadcast_to(np.stack([kernel, -kernel]), got["pooled_gradients"].shape)
    np.testing.assert_allclose(got["pooled_gradients"], expected, rtol=1e-4, atol=1e-4 * np.abs(kernel).max())

    card = Explainer(str(output), device="cpu").card
    assert card.labels == ("not pneumonia", "pneumonia") and card.activation == "sigmoid"


def test_a_one_unit_output_without_a_sigmoid_is_refused(tmp_path, capsys):
    image = keras.Input((HEIGHT, WIDTH, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, activation="relu")(image))
    keras.Model(image, keras.layers.Dense(1)(pooled)).save(tmp_path / "regression.keras")
    output = tmp_path / "regression.onnx"
    flags = ["--model", str(tmp_path / "regression.keras"), "--preprocessing", "none", "--output", str(output)]
    assert main(flags) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("export failed: ") and "1 unit and no sigmoid" in line and "Dense(1, sigmoid)" in line
    assert not output.exists()

"""`--score probability` and `--preprocessing torch`, end to end: export, then the ONNX outputs
against closed forms computed here in numpy (not by the export's own self-check)."""

from __future__ import annotations

import keras
import numpy as np
import onnxruntime

from export.build import main
from runtime import Explainer

TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def test_probability_score_with_torch_preprocessing(tmp_path, capsys):
    keras.utils.set_random_seed(1)
    image = keras.Input((12, 10, 3))
    features = keras.layers.Conv2D(5, 3, activation="relu", name="conv")(image)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(image, keras.layers.Dense(4, activation="softmax", name="head")(pooled))
    path = tmp_path / "small.keras"
    model.save(path)
    output = tmp_path / "small.onnx"
    arguments = ["--model", str(path), "--preprocessing", "torch", "--score", "probability", "--output", str(output)]
    assert main(arguments) == 0, capsys.readouterr().err

    pixels = np.random.default_rng(0).uniform(0, 255, (3, 12, 10, 3)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    got = dict(zip(
        [o.name for o in session.get_outputs()],
        session.run(None, {"image": pixels, "class_index": np.array([[-1, 2]] * 3, np.int64)}),
    ))

    # The same network on pixels normalised here, the torchvision way.
    maps = keras.Model(image, features).predict((pixels - TORCH_MEAN) / TORCH_STD, verbose=0).astype(np.float64)
    kernel, bias = (w.astype(np.float64) for w in model.get_layer("head").get_weights())
    logits = maps.mean(axis=(1, 2)) @ kernel + bias
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    classes = np.stack([np.full(3, -1), np.full(3, 2)], axis=1)
    classes[:, 0] = probabilities.argmax(1)
    # d p_c / d A[h, w, :] = p_c (W[:, c] - sum_j p_j W[:, j]) / (h w), the same at every position.
    expected_pooled = np.stack([
        probabilities[n, classes[n], None] * (kernel[:, classes[n]].T - probabilities[n] @ kernel.T) / (10 * 8)
        for n in range(3)
    ])
    np.testing.assert_allclose(got["feature_maps"], maps, rtol=1e-4, atol=1e-4 * np.abs(maps).max())
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got["explained_class"], classes)
    np.testing.assert_allclose(got["score"], np.take_along_axis(probabilities, classes, 1), rtol=1e-5, atol=1e-7)
    scale = np.abs(expected_pooled).max()
    np.testing.assert_allclose(got["pooled_gradients"], expected_pooled, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(
        got["gradients"], np.broadcast_to(expected_pooled[:, :, None, None, :], got["gradients"].shape),
        rtol=1e-4, atol=1e-4 * scale,
    )

    card = Explainer(str(output), device="cpu").card
    assert (card.score, card.preprocessing) == ("probability", "torch")

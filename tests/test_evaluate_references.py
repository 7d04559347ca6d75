"""runtime.evaluate's metrics equal RISE's, torchcam's and pytorch-grad-cam's, within 1e-3, on the
same maps and the same model: references computed once with torch
(tests/torch_fixtures/evaluate_make_references.py), the model run here from its ONNX export."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtime.evaluate import metrics, road
from runtime.evaluate.run import NORMALISATIONS

FIXTURES = Path(__file__).parent / "torch_fixtures"
TOLERANCE = 1e-3
TORCH = NORMALISATIONS["torch"]  # the fixture model's ImageNet normalisation


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((FIXTURES / "evaluate_references.json").read_text())


@pytest.fixture(scope="module")
def case() -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(image raw float32, map, class) for each of the 6 maps, in the references' order."""
    data = np.load(FIXTURES / "evaluate_references.npz")
    return [(image.astype(np.float32), saliency, int(c))
            for image, per_image, c in zip(data["images"], data["maps"], data["classes"])
            for saliency in per_image]


@pytest.fixture(scope="module")
def score():
    session = ort.InferenceSession(str(FIXTURES / "evaluate_model.onnx"), providers=["CPUExecutionProvider"])

    def score(images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        (probabilities,) = session.run(None, {"image": np.ascontiguousarray(images, np.float32)})
        return probabilities[np.arange(len(images)), classes]

    return score


def close(got: list[float], expected: list[float]) -> None:
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def test_deletion_and_insertion_equal_rise(reference, case, score):
    steps = reference["steps"]
    deletion = [metrics.deletion_curve(score, i, s, c, steps, 5, TORCH) for i, s, c in case]
    insertion = [metrics.insertion_curve(score, i, s, c, steps, 5, TORCH) for i, s, c in case]
    close(np.ravel(deletion), np.ravel(reference["rise_deletion_curve"]))
    close(np.ravel(insertion), np.ravel(reference["rise_insertion_curve"]))
    close([metrics.auc(d) for d in deletion], reference["rise_deletion"])
    close([metrics.auc(d) for d in insertion], reference["rise_insertion"])


def test_deletion_equals_torchcam_and_its_insertion_from_zero_differs_from_rise(reference, case, score):
    steps = reference["steps"]
    close([metrics.auc(metrics.deletion_curve(score, i, s, c, steps, 8, TORCH)) for i, s, c in case],
          reference["torchcam_deletion"])
    torchcam = [metrics.auc(metrics.torchcam_insertion_curve(score, i, s, c, steps, 8, TORCH)) for i, s, c in case]
    close(torchcam, reference["torchcam_insertion"])
    assert np.abs(np.subtract(torchcam, reference["rise_insertion"])).max() > 0.02  # two definitions


def test_confidence_metrics_equal_torchcam_and_pytorch_grad_cam(reference, case, score):
    changes = [metrics.confidence_change(score, i[None], s[None], np.array([c]), TORCH) for i, s, c in case]
    got = {name: [float(change[name][0]) for change in changes] for name in changes[0]}
    close(np.divide(got["average-drop"], 100), reference["torchcam_average_drop"])
    close(np.divide(got["increase-in-confidence"], 100), reference["torchcam_increase"])
    close(got["drop-in-confidence"], reference["gradcam_drop_in_confidence"])
    close(got["confidence-change"], reference["gradcam_confidence_change"])
    close(np.divide(got["increase-in-confidence"], 100), reference["gradcam_increase_in_confidence"])


def test_road_equals_pytorch_grad_cam(reference, case, score):
    got = [road.road_scores(score, i, s, c, 6, TORCH, rng=None) for i, s, c in case]
    close([g["road-morf"] for g in got], reference["road_morf"])
    close([g["road-lerf"] for g in got], reference["road_lerf"])
    close([g["road"] for g in got], reference["road_combined"])


def test_the_normalisation_matters(reference, case, score):
    """The libraries perturb the normalised tensor: deleting to raw black instead of to the mean
    colour gives other figures, which this comparison would catch."""
    steps = reference["steps"]
    black = [metrics.auc(metrics.deletion_curve(score, i, s, c, steps, 8)) for i, s, c in case]
    assert np.abs(np.subtract(black, reference["rise_deletion"])).max() > 0.02

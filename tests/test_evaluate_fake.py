"""runtime.evaluate through a real .onnx whose probabilities are known in closed form (the fake
model: softmax of the mean colour / 255 times WEIGHTS), and its command line."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from runtime import Explainer
from runtime.evaluate import auc, confidence_change, deletion_curve, evaluate, insertion_curve, model_score
from runtime.evaluate.metrics import Normalisation, rise_blurred, step_counts
from tests.fake_model import INPUT_SIZE, WEIGHTS, blob_image, write_fake_model


def closed_form(image: np.ndarray, class_index: int) -> float:
    """The fake model's probability of class_index for one HxWx3 image (0..255)."""
    logits = image.reshape(-1, 3).mean(axis=0) / 255 @ WEIGHTS.astype(np.float64)
    exp = np.exp(logits - logits.max())
    return float(exp[class_index] / exp.sum())


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> str:
    return str(write_fake_model(tmp_path_factory.mktemp("fake") / "fake.onnx"))


@pytest.fixture
def image() -> np.ndarray:
    image = blob_image(*INPUT_SIZE, (4, 8, 20, 16), colour=(250, 40, 10)).astype(np.float32)
    return image + np.random.default_rng(5).integers(0, 60, image.shape)


def test_model_score_is_the_onnx_probability(fake, image):
    images = np.stack([image, image[::-1] * 0.5])
    got = model_score(fake)(images, np.array([0, 2]))
    np.testing.assert_allclose(got, [closed_form(images[0], 0), closed_form(images[1], 2)], rtol=1e-5)


def test_deletion_and_insertion_auc_equal_the_closed_form(fake, image):
    saliency = image[..., 0]  # the red pixels first
    steps, pixels = 8, image.shape[0] * image.shape[1]
    order = np.argsort(-saliency.ravel(), kind="stable")

    def direct(start, end):
        values = []
        for k in range(steps + 1):
            current = start.reshape(-1, 3).copy()
            chosen = order[: k * pixels // steps]  # 1024 pixels, 128 per step
            current[chosen] = end.reshape(-1, 3)[chosen]
            values.append(closed_form(current, 0))
        return np.trapezoid(values, dx=1 / steps)

    score = model_score(fake)
    deletion = auc(deletion_curve(score, image, saliency, 0, steps, batch_size=3))
    insertion = auc(insertion_curve(score, image, saliency, 0, steps, batch_size=3))
    assert deletion == pytest.approx(direct(image, np.zeros_like(image)), rel=1e-5)
    assert insertion == pytest.approx(direct(rise_blurred(image, Normalisation()), image), rel=1e-5)


def test_average_drop_equals_the_closed_form(fake, image):
    saliency = np.linspace(0, 2, image.shape[0] * image.shape[1], dtype=np.float32).reshape(image.shape[:2])
    changes = confidence_change(model_score(fake), image[None], saliency[None], np.array([0]))
    y, o = closed_form(image, 0), closed_form(image * (saliency / 2)[..., None], 0)
    assert changes["average-drop"][0] == pytest.approx(max(0, y - o) / y * 100, rel=1e-4)
    assert changes["increase-in-confidence"][0] == (100.0 if o > y else 0.0)


def test_perturbed_batches_never_exceed_the_batch_size(fake, image):
    score = model_score(fake)
    sizes = []

    def counting(images, classes):
        sizes.append(len(images))
        return score(images, classes)

    results = evaluate(Explainer(fake, batch_size=4), [image.astype(np.uint8)] * 3, ["gradcam"],
                       ["deletion", "insertion"], steps=30, score=counting)
    assert results.images == 3 and max(sizes) == 4
    assert len(step_counts(32 * 32, 30)) == 31
    assert sum(sizes) == 3 * 6 * 2 * 31  # 3 images, gradcam + 5 baselines, 2 curves of 31 points


def test_command_line_writes_the_report_and_counts_a_bad_image(fake, image, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    cv2.imwrite(str(good), image.astype(np.uint8)[..., ::-1])
    bad.write_text("not an image")
    out = tmp_path / "out"
    boxes = tmp_path / "boxes.json"
    x, y = Explainer(fake).explain(str(good), top_k=1, class_index=0).maps[0].peak
    boxes.write_text(json.dumps({str(good): {"0": [[x - 1, y - 1, x + 1, y + 1]]}}))  # around Grad-CAM's peak
    run = subprocess.run(
        [sys.executable, "-m", "runtime.evaluate", str(good), str(bad), "--model", fake, "--methods",
         "gradcam,eigencam", "--class", "0", "--steps", "5", "--boxes", str(boxes), "--random-model", fake, "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert [line for line in run.stderr.splitlines() if "bad.png" in line and "Traceback" not in line]
    assert "Traceback" not in run.stderr
    data = json.loads((out / "metrics.json").read_text())
    assert data["images"] == 1 and data["skipped"] == 1
    assert set(data["methods"]) == {"gradcam", "eigencam", "random-cam", "layer-noise", "pixel-noise", "gaussian", "edge"}
    assert {"road", "road-morf", "road-lerf", "deletion", "insertion", "average-drop"} <= set(data["methods"]["gradcam"])
    assert data["methods"]["gradcam"]["pointing-game"]["mean"] == 1.0
    assert data["methods"]["gaussian"]["pointing-game"]["mean"] == float(x - 1 <= 15 <= x + 1 and y - 1 <= 15 <= y + 1)  # its peak: (15, 15)
    assert data["sanity"]["methods"]["gradcam"]["spearman"] == pytest.approx(1)  # the same model twice
    assert "| gradcam |" in (out / "report.md").read_text()
    for picture in ("curves.png", "examples.png"):
        assert cv2.imread(str(out / picture)) is not None


def test_command_line_refuses_an_unknown_method_in_one_line(fake, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "runtime.evaluate", "x.png", "--model", fake, "--methods", "nope",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "nope" in run.stderr
    assert not (tmp_path / "out").exists()

"""The ONNX import on models PyTorch exported, against PyTorch itself, without torch installed:
tests/torch_fixtures/ holds small CNNs from torchvision's blocks, exported by torch.onnx.export,
with what torch autograd and pytorch-grad-cam gave for them (written by make_fixtures.py, where
torch is installed; benchmarks/torch_compare.py does the same on full torchvision models)."""

import contextlib
import io
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from tests.importing import import_onnx
from runtime import Explainer

FIXTURES = Path(__file__).resolve().parent / "torch_fixtures"
# model file -> (its torch model's reference .npz, the head the import should find)
MODELS = {
    "tiny_resnet": ("tiny_resnet", "global average pooling"),
    "tiny_mobilenet": ("tiny_mobilenet", "reverse-mode autodiff"),
    "tiny_convnext": ("tiny_convnext", "reverse-mode autodiff"),
    "tiny_convnext_dynamo": ("tiny_convnext", "reverse-mode autodiff"),  # opset 18, .onnx.data, an as_strided Gather
    "tiny_shufflenet": ("tiny_shufflenet", "global average pooling"),  # Slice ends from Shape: shapes measured
    "tiny_shufflenet_batch1": ("tiny_shufflenet", "global average pooling"),  # fixed batch: Reshape targets [1, ...]
}


def relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def scale_cam_image(maps: np.ndarray, size: int | None = None) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image: each map min-max scaled, then cv2.resize'd to size."""
    scaled = [np.float32((m - m.min()) / (1e-7 + (m - m.min()).max())) for m in maps]
    return np.stack([cv2.resize(m, (size, size)) if size else m for m in scaled])


@pytest.fixture(scope="module", params=list(MODELS))
def imported(request, tmp_path_factory) -> tuple[str, Path, dict[str, np.ndarray], str]:
    name = request.param
    output = tmp_path_factory.mktemp(name) / f"{name}_gradcam.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = import_onnx(str(FIXTURES / f"{name}.onnx"), str(output))
    assert code == 0
    return name, output, dict(np.load(FIXTURES / f"{MODELS[name][0]}.npz")), printed.getvalue()


def test_the_import_takes_the_expected_head(imported):
    name, _, _, printed = imported
    assert MODELS[name][1] in printed


def test_outputs_equal_torch_autograd_and_pytorch_grad_cam(imported):
    _, path, torch_says, _ = imported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    top = torch_says["top"].astype(np.int64)
    ours = dict(zip(names, session.run(None, {"image": torch_says["images"].astype(np.float32), "class_index": top[:, None]})))

    assert (ours["explained_class"][:, 0] == top).all()
    assert relative(ours["feature_maps"], torch_says["features"].transpose(0, 2, 3, 1)) < 1e-4
    assert relative(ours["pooled_gradients"][:, 0], torch_says["pooled_gradients"]) < 1e-4
    logits = torch_says["logits"]
    assert relative(ours["score"][:, 0], logits[np.arange(len(top)), top]) < 1e-4
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(ours["probabilities"], probabilities, atol=1e-5)
    size = torch_says["images"].shape[1]
    ours_like_theirs = scale_cam_image(scale_cam_image(ours["cam"][:, 0], size))
    for mine, theirs in zip(ours_like_theirs, torch_says["gradcam"], strict=True):
        assert pearson(mine, theirs) >= 0.999


def test_the_runtime_explains_them_unchanged(imported):
    _, path, torch_says, _ = imported
    explainer = Explainer(str(path), device="cpu")
    for image, top, theirs in zip(torch_says["images"], torch_says["top"], torch_says["gradcam"], strict=True):
        explanation = explainer.explain(image)
        assert explanation.predictions[0].index == top
        assert pearson(explanation.heatmaps[0], theirs) >= 0.99

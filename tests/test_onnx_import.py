"""The ONNX import: hand-written classifiers shaped like torch.onnx.export's, through
`python -m export.build --model x.onnx`, checked against the original model and the runtime."""

import re
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from tests.importing import import_onnx, refusal
from runtime import Explainer
from tests.onnx_classifiers import CLASSES, SIZE, write_classifier

TORCH_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
TORCH_STD = np.array([58.395, 57.12, 57.375], np.float32)


def _import(tmp_path, **kwargs) -> tuple[str, str]:
    source = write_classifier(tmp_path / "classifier.onnx", **kwargs)
    output = tmp_path / "classifier_gradcam.onnx"
    assert import_onnx(str(source), str(output)) == 0
    return str(source), str(output)


@pytest.mark.parametrize("head,layout,softmax", [("gemm", "nchw", True), ("matmul", "nhwc", False)])
def test_outputs_equal_the_original_and_closed_form_gradcam(tmp_path, head, layout, softmax):
    source, output = _import(tmp_path, head=head, layout=layout, softmax=softmax)
    images = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    pixels = (images - TORCH_MEAN) / TORCH_STD
    original = ort.InferenceSession(source)
    feed = pixels.transpose(0, 3, 1, 2) if layout == "nchw" else pixels
    expected = original.run(None, {"input": np.ascontiguousarray(feed)})[0]
    if not softmax:
        expected = np.exp(expected - expected.max(1, keepdims=True))
        expected /= expected.sum(1, keepdims=True)
    imported = ort.InferenceSession(output)
    class_index = np.array([[-1, 2], [0, -1]], np.int64)
    names = [o.name for o in imported.get_outputs()]
    outputs = dict(zip(names, imported.run(None, {"image": images, "class_index": class_index})))
    np.testing.assert_allclose(outputs["probabilities"], expected, rtol=1e-4, atol=1e-7)
    assert outputs["explained_class"][0, 1] == 2 and outputs["explained_class"][1, 0] == 0
    assert outputs["explained_class"][0, 0] == np.argmax(expected[0])
    # pooled gradient = row c of the linear layer / (h*w); cam = ReLU(sum_c pooled * maps)
    from onnx import load, numpy_helper

    weights = {i.name: numpy_helper.to_array(i) for i in load(source).graph.initializer}
    rows = weights["fc.weight"] if head == "gemm" else weights["fc.matrix"].T
    pooled = rows[outputs["explained_class"]] / (SIZE * SIZE)
    np.testing.assert_allclose(outputs["pooled_gradients"], pooled, rtol=1e-6)
    assert outputs["gradients"].shape == (2, 2, SIZE, SIZE, rows.shape[1])
    np.testing.assert_allclose(outputs["gradients"][:, :, 3, 7], pooled, rtol=1e-6)
    cam = np.maximum(np.einsum("nkc,nhwc->nkhw", pooled, outputs["feature_maps"]), 0)
    np.testing.assert_allclose(outputs["cam"], cam, rtol=1e-5, atol=1e-6)


def test_the_runtime_accepts_the_imported_model(tmp_path):
    _, output = _import(tmp_path)
    explainer = Explainer(output)
    assert explainer.card.labels == tuple(f"class {i}" for i in range(CLASSES))
    assert explainer.card.self_check["outputs"]["gradients"]["relative"] < 1e-3
    image = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    explanation = explainer.explain(image, top_k=2, explain_top=2)
    assert len(explanation.predictions) == 2


@pytest.mark.parametrize("head,described", [
    ("sigmoid_gemm", "GlobalAveragePool -> Flatten -> Sigmoid -> Gemm (reverse-mode autodiff)"),
    ("flat", "Flatten -> Gemm (reverse-mode autodiff)"),  # no pooling: the conv map feeds Gemm
])
def test_other_heads_go_through_autodiff(tmp_path, capsys, head, described):
    _import(tmp_path, head=head)
    assert f"head: {described}" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs,message", [
    ({"inputs": 2}, "the model has 2 inputs"),
])
def test_refusals_write_nothing(tmp_path, capsys, kwargs, message):
    source = write_classifier(tmp_path / "classifier.onnx", **kwargs)
    output = tmp_path / "out.onnx"
    assert message in refusal(source, output, capsys)


def test_export_build_routes_onnx_files_without_tensorflow(tmp_path):
    source = write_classifier(tmp_path / "classifier.onnx")
    output = tmp_path / "out.onnx"
    code = ("import sys; from export.build import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; raise SystemExit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "--model", str(source), "--preprocessing", "torch",
                           "--output", str(output)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert output.exists() and "self-check" in done.stdout


def test_the_lines_say_the_self_checks_limit_and_a_small_files_size(tmp_path, capsys):
    _import(tmp_path)
    printed = capsys.readouterr().out
    assert re.search(r"self-check vs the original model: worst \w+ \S+ relative \(limit 1e-0[24]\)", printed), printed
    size = re.search(r"wrote \S+ \((\S+) MiB", printed).group(1)
    assert float(size) > 0 and size != "0.0"

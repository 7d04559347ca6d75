"""The import's self-check on a wide ReLU MLP after an AveragePool (torchvision VGG's head): onnxruntime
has no float64 AveragePool, which once sent the finite differences to float32, where such a head's
differences are off by more than the 1e-2 limit and a correct import was refused. The AveragePool is
now rewritten into float64 ops; a wrong gradient is still refused."""

import json

import numpy as np
import onnx
import pytest

from tests.importing import import_onnx, refusal
from export.onnx_import.vjp import REGISTRY
from tests.onnx_classifiers import write_classifier, write_wide_vgg_classifier


def _build(tmp_path) -> tuple[int, str]:
    source = write_wide_vgg_classifier(tmp_path / "vgg.onnx")
    output = tmp_path / "vgg_gradcam.onnx"
    code = import_onnx(str(source), str(output))
    return code, str(output)


def test_wide_relu_mlp_after_average_pool_passes_in_float64(tmp_path):
    code, output = _build(tmp_path)
    assert code == 0
    metadata = {p.key: p.value for p in onnx.load(output).metadata_props}
    check = json.loads(metadata["onnxcam.self_check"])
    assert "float64" in check["reference"]
    assert check["outputs"]["gradients"]["relative"] < 1e-5 and check["outputs"]["gradients"]["limit"] == 1e-4


def _relu_as_identity(e, node, g, wanted):
    return {0: g}  # the mask left out


def _average_pool_off_by_a_thousandth(e, node, g, wanted):
    return {0: e.op("Mul", g, e.const(np.float32(1.001)))}


@pytest.mark.parametrize("op, wrong", [("Relu", _relu_as_identity), ("AveragePool", _average_pool_off_by_a_thousandth)])
def test_a_wrong_vjp_is_still_refused(tmp_path, capsys, monkeypatch, op, wrong):
    monkeypatch.setitem(REGISTRY, op, wrong)
    code, output = _build(tmp_path)
    assert code == 1
    assert "self-check failed: gradients" in capsys.readouterr().err


def _vanishing(tmp_path, head: str) -> str:
    """A classifier whose conv output is ~1e-12 (random weights, BatchNorm statistics from the init:
    torchvision's googlenet reaches its head at std 5e-12), which once failed a correct import."""
    model = onnx.load(write_classifier(tmp_path / "source.onnx", head=head))
    for init in model.graph.initializer:
        if init.name.startswith("conv."):
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(1e-12), init.name))
    onnx.save(model, tmp_path / "vanishing.onnx")
    return str(tmp_path / "vanishing.onnx")


@pytest.mark.parametrize("head", ["gemm", "sigmoid_gemm"])
def test_vanishing_activations_pass(tmp_path, head):
    output = tmp_path / "out.onnx"
    assert import_onnx(_vanishing(tmp_path, head), output) == 0
    check = json.loads({p.key: p.value for p in onnx.load(output).metadata_props}["onnxcam.self_check"])
    assert check["outputs"]["gradients"]["relative"] < 1e-6


def _sigmoid_off_by_a_thousandth(e, node, g, wanted):
    sigmoid = node.output[0]
    slope = e.op("Mul", sigmoid, e.op("Sub", e.const(1.0), sigmoid))
    return {0: e.op("Mul", e.op("Mul", g, slope), e.const(np.float32(1.001)))}


def test_vanishing_activations_still_refuse_a_wrong_gradient(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(REGISTRY, "Sigmoid", _sigmoid_off_by_a_thousandth)
    output = tmp_path / "out.onnx"
    assert "self-check failed: gradients" in refusal(_vanishing(tmp_path, "sigmoid_gemm"), output, capsys)

"""Gather's vector-Jacobian product (vjp.py) run in onnxruntime against numpy's scatter-add: any axis,
repeated and negative indices, 0-d indices, indices given as constants or computed (a graph input)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError
from export.onnx_import.emitter import Emitter
from tests.importing import refusal, with_nodes
from export.onnx_import.autodiff import REGISTRY  # every rule: vjp.py and vjp_attention.py
from tests.onnx_classifiers import write_head_classifier

SHAPE = (3, 4, 5)


def _gather_gradient(indices: np.ndarray, axis: int, constant: bool, opset: int = 17):
    """A function g -> d <g, Gather(x, indices, axis)> / dx, through the emitted ONNX nodes."""
    node = helper.make_node("Gather", ["x", "indices"], ["y"], axis=axis)
    constants = {"indices": indices} if constant else {}
    e = Emitter("grad/", opset, {"x": list(SHAPE), "y": None}, constants)
    gradient = REGISTRY["Gather"](e, node, "g", {0})[0]
    g_shape = np.take(np.zeros(SHAPE), indices, axis=axis).shape
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE),
              helper.make_tensor_value_info("g", TensorProto.FLOAT, g_shape)]
    initializers = list(e.initializers)
    if constant:
        initializers.append(numpy_helper.from_array(indices, "indices"))
    else:
        inputs.append(helper.make_tensor_value_info("indices", helper.np_dtype_to_tensor_dtype(indices.dtype),
                                                    indices.shape))
    graph = helper.make_graph([node, *e.nodes], "gather", inputs,
                              [helper.make_tensor_value_info(gradient, TensorProto.FLOAT, SHAPE)], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros(SHAPE, np.float32)
    feeds = {"x": x} | ({} if constant else {"indices": indices})
    return lambda g: session.run(None, feeds | {"g": g})[0]


def _numpy_gradient(g: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    """zeros shaped like x with g added at indices along axis (repeats add up)."""
    expected = np.zeros(SHAPE)
    q = indices.ndim
    moved = np.moveaxis(g, list(range(axis % len(SHAPE), axis % len(SHAPE) + q)), list(range(q)))
    np.add.at(np.moveaxis(expected, axis, 0), indices, moved)
    return expected


CASES = {
    "axis 0": (np.array([2, 0], np.int64), 0),
    "axis 1, repeated": (np.array([1, 3, 1, 1], np.int64), 1),
    "last axis, negative and repeated, 2-D": (np.array([[-1, 4], [0, -5]], np.int64), -1),
    "axis 2 as 2, int32": (np.array([4, -2, 4], np.int32), 2),
    "axis 1, 0-d": (np.array(-3, np.int64), 1),
    "axis 0, 0-d": (np.array(1, np.int64), 0),
}


@pytest.mark.parametrize("constant", [True, False], ids=["constant", "computed"])
@pytest.mark.parametrize("case", CASES)
def test_gather_gradient_is_numpy_scatter_add(case, constant):
    indices, axis = CASES[case]
    run = _gather_gradient(indices, axis, constant)
    forward = np.take(np.arange(np.prod(SHAPE)).reshape(SHAPE), indices, axis=axis)
    g = np.random.default_rng(0).standard_normal(forward.shape).astype(np.float32)
    np.testing.assert_allclose(run(g), _numpy_gradient(g, indices, axis), rtol=1e-6, atol=1e-6)


def test_gather_gradient_needs_opset_16():
    with pytest.raises(ExportError, match="unsupported head op Gather .*opset 16"):
        _gather_gradient(np.array([1, 0], np.int64), 0, True, opset=15)  # a run of indices is a Pad


def test_indices_from_the_image_values_are_refused(tmp_path, capsys):
    """The strided head's flat size from the image's values (a Cast of its maximum) instead of Size(input)."""
    model = onnx.load(write_head_classifier(tmp_path / "classifier.onnx", "strided"))
    nodes = list(model.graph.node)
    at = next(i for i, node in enumerate(nodes) if node.name == "/numel")
    nodes[at:at + 1] = [helper.make_node("ReduceMax", ["input"], ["peak"], name="/peak", keepdims=0),
                        helper.make_node("Cast", ["peak"], ["numel"], name="/peak/Cast", to=TensorProto.INT64)]
    onnx.save(with_nodes(model, nodes), tmp_path / "odd.onnx")
    error = refusal(tmp_path / "odd.onnx", tmp_path / "out.onnx", capsys)
    assert "unsupported head input: node /peak/Cast computes integers from the image's values" in error

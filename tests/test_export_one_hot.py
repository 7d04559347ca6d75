"""export/one_hot.py: products with a one-hot seed become row lookups, and only those."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.one_hot import gather_one_hot_products

DEPTH, WIDTH = 5, 4


def _model(values=(0, 1), product="MatMul", axis=-1, **gemm) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(WIDTH, DEPTH) if gemm.get("transB") else (DEPTH, WIDTH)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(matrix, "matrix"),
        numpy_helper.from_array(np.array([DEPTH], np.int64), "depth"),
        numpy_helper.from_array(np.array(values, np.float32), "values"),
    ]
    nodes = [
        helper.make_node("OneHot", ["index", "depth", "values"], ["seed"], axis=axis),
        helper.make_node(product, ["seed", "matrix"], ["gradient"], **gemm),
    ]
    graph = helper.make_graph(
        nodes, "one_hot_product",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("gradient", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, index: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"index": index})[0]


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


@pytest.mark.parametrize("product", ["MatMul", "Gemm"])
def test_one_hot_product_becomes_a_gather_with_the_same_values(product):
    index = np.array([3, 0, 3, 4], np.int64)
    expected = _run(_model(product=product), index)
    rewritten = gather_one_hot_products(_model(product=product))
    assert _ops(rewritten) == ["OneHot", "Gather"]
    np.testing.assert_array_equal(_run(rewritten, index), expected)


@pytest.mark.parametrize(
    "model",
    [_model(values=(1, 0)), _model(values=(0, 2)), _model(axis=0), _model(product="Gemm", transB=1),
     _model(product="Gemm", alpha=2.0)],
    ids=["inverted values", "on value 2", "axis 0", "transposed matrix", "scaled product"],
)
def test_other_products_are_left_alone(model):
    before = _ops(model)
    assert _ops(gather_one_hot_products(model)) == before

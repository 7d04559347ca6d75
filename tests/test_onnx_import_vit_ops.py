"""The vector-Jacobian products a vision transformer's head needs, one op at a time: each rule's ONNX
nodes run in onnxruntime (float32) against central finite differences of the op in float64 (onnx's
reference evaluator): Slice (class token, patch tokens, Swin's strided patch merging), Gelu (exact and
tanh), Pow, Expand, ReduceSum, Where (vjp_attention.py; Cast: a pass-through) and the rules of vjp.py that attention
reuses: MatMul with two variable operands, Softmax, LayerNormalization, Concat of the extra tokens, Add of
the position embedding."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from export.errors import ExportError
from export.onnx_import.autodiff import Emitter
from export.onnx_import.autodiff import REGISTRY  # every rule: vjp.py and vjp_attention.py

RNG = np.random.default_rng(0)


def r(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


# name -> (op, inputs in order as (name, value, variable?), attributes, opset)
CASES = {
    "Slice: the class token": ("Slice", [("x", r(2, 6, 4), True), ("s", i64(0), False), ("e", i64(1), False),
                                         ("a", i64(1), False)], {}, 17),
    "Slice: patch tokens, negative start, end past the size": (
        "Slice", [("x", r(2, 6, 4), True), ("s", i64(-4), False), ("e", i64(100), False), ("a", i64(-2), False)], {}, 17),
    "Slice: strided on two axes (Swin's patch merging)": (
        "Slice", [("x", r(2, 5, 6, 3), True), ("s", i64(1, 0), False), ("e", i64(5, 6), False),
                  ("a", i64(1, 2), False), ("t", i64(2, 2), False)], {}, 17),
    "Pad (Swin's windows)": ("Pad", [("x", r(2, 5, 6, 3), True), ("pads", i64(0, 1, 0, 0, 0, 2, 3, 0), False)], {}, 17),
    "Gelu": ("Gelu", [("x", r(2, 5, 4) * 2, True)], {}, 20),
    "Gelu tanh": ("Gelu", [("x", r(2, 5, 4) * 2, True)], {"approximate": "tanh"}, 20),
    "Pow 3": ("Pow", [("x", r(2, 5), True), ("p", np.array(3.0), False)], {}, 17),
    "Expand": ("Expand", [("x", r(2, 1, 4), True), ("shape", i64(2, 5, 4), False)], {}, 17),
    "ReduceSum": ("ReduceSum", [("x", r(2, 5, 4), True), ("axes", i64(1), False)], {"keepdims": 0}, 17),
    "Where": ("Where", [("c", RNG.random((2, 5)) > 0.5, False), ("a", r(2, 5), True), ("b", r(1, 5), True)], {}, 17),
    "MatMul: two variables (q kᵀ)": ("MatMul", [("q", r(2, 2, 5, 3), True), ("k", r(2, 2, 3, 5), True)], {}, 17),
    "Softmax": ("Softmax", [("x", r(2, 2, 5, 5), True)], {"axis": -1}, 17),
    "LayerNormalization": ("LayerNormalization", [("x", r(2, 5, 4), True), ("gamma", r(4), False),
                                                  ("beta", r(4), False)], {"axis": -1}, 17),
    "Concat: extra tokens and patches": ("Concat", [("a", r(2, 2, 4), True), ("b", r(2, 4, 4), True)], {"axis": 1}, 17),
    "Add: position embedding": ("Add", [("x", r(2, 6, 4), True), ("pos", r(1, 6, 4), False)], {}, 17),
}

ERF = np.vectorize(math.erf)
# onnx's reference Gelu is about 2e-8 off in float64: too coarse for differences at a step of 1e-6
EXACT = {"Gelu": lambda x: x * (1 + ERF(x / math.sqrt(2))) / 2,
         "Gelu tanh": lambda x: x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))) / 2}


def _model(node: onnx.NodeProto, inputs: list, outputs: list[str], nodes: list, initializers: list, opset: int,
           dtype: np.dtype) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node, *nodes], "op",
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.asarray(value).astype(dtype).dtype
                                                                              if variable else np.asarray(value).dtype),
                                       None) for name, value, variable in inputs if variable] +
        [helper.make_tensor_value_info("g", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None)],
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None)
         for name in outputs],
        initializer=[*initializers, *[numpy_helper.from_array(np.asarray(value), name)
                                      for name, value, variable in inputs if not variable]])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


@pytest.mark.parametrize("case", CASES)
def test_the_rule_equals_finite_differences(case):
    op, inputs, attributes, opset = CASES[case]
    node = helper.make_node(op, [name for name, _, _ in inputs], ["y"], **attributes)
    variables = {name: value for name, value, variable in inputs if variable}
    forward = ReferenceEvaluator(_model(node, inputs, ["y"], [], [], opset, np.float64))
    y = forward.run(None, variables | {"g": np.zeros(1)})[0]
    shapes = {name: list(np.shape(value)) for name, value, _ in inputs} | {"y": list(y.shape)}
    constants = {name: np.asarray(value) for name, value, variable in inputs if not variable}
    e = Emitter("grad/", opset, shapes, constants)
    wanted = {index for index, (_, _, variable) in enumerate(inputs) if variable}
    found = REGISTRY[op](e, node, "g", wanted)
    assert set(found) == wanted
    names = [found[index] for index in sorted(wanted)]
    model = _model(node, [(n, v.astype(np.float32) if v.dtype == np.float64 else v, c) for n, v, c in inputs],
                   names, e.nodes, e.initializers, opset, np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    g = RNG.standard_normal(y.shape)
    feeds = {name: value.astype(np.float32) for name, value in variables.items()} | {"g": g.astype(np.float32)}
    gradients = dict(zip(sorted(wanted), session.run(names, feeds)))
    directions = {name: RNG.standard_normal(np.shape(value)) for name, value in variables.items()}
    epsilon = 1e-6

    def score(sign: float) -> float:
        moved = {name: value + sign * epsilon * directions[name] for name, value in variables.items()}
        if case in EXACT:
            return float(np.sum(g * EXACT[case](moved["x"])))
        return float(np.sum(g * forward.run(None, moved | {"g": np.zeros(1)})[0]))

    numeric = (score(1) - score(-1)) / (2 * epsilon)
    analytic = sum(float(np.sum(gradients[index] * directions[inputs[index][0]])) for index in wanted)
    assert abs(analytic - numeric) <= 1e-5 * max(abs(numeric), 1.0), (analytic, numeric)


def test_a_cast_to_float_passes_the_gradient_and_others_are_refused():
    e = Emitter("grad/", 17, {"x": [2, 5], "y": [2, 5]}, {})
    assert REGISTRY["Cast"](e, helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT), "g", {0}) == {0: "g"}
    with pytest.raises(ExportError, match="unsupported head op Cast .*only a Cast to float32"):
        REGISTRY["Cast"](e, helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16), "g", {0})


@pytest.mark.parametrize("starts, ends", [([0, 1], [4, 5]), ([-5, 2], [100, -1]), ([1, 3], [1, 2])],
                         ids=["inside", "negative and past the end", "empty"])
def test_a_slice_with_computed_starts_and_ends_pads_the_gradient(starts, ends):
    """Swin's crop after padding: starts/ends computed from shapes (graph inputs here), steps 1."""
    node = helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])
    x = np.zeros((2, 6, 7, 3), np.float32)
    y = x[:, slice(starts[0], ends[0]), slice(starts[1], ends[1])]
    e = Emitter("grad/", 17, {"x": list(x.shape), "y": list(y.shape)}, {"a": i64(1, 2)})
    gradient = REGISTRY["Slice"](e, node, "g", {0})[0]
    graph = helper.make_graph(
        [node, *e.nodes], "slice",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape), helper.make_tensor_value_info("g", TensorProto.FLOAT, y.shape),
         helper.make_tensor_value_info("s", TensorProto.INT64, [2]), helper.make_tensor_value_info("e", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info(gradient, TensorProto.FLOAT, x.shape)],
        initializer=[*e.initializers, numpy_helper.from_array(i64(1, 2), "a")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    g = RNG.standard_normal(y.shape).astype(np.float32)
    expected = np.zeros_like(x)
    expected[:, slice(starts[0], ends[0]), slice(starts[1], ends[1])] = g
    got = session.run(None, {"x": x, "g": g, "s": i64(*starts), "e": i64(*ends)})[0]
    np.testing.assert_array_equal(got, expected)


def test_a_computed_slice_with_steps_is_refused():
    node = helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])
    e = Emitter("grad/", 17, {"x": [2, 6, 4], "y": [2, 1, 4]}, {"a": i64(1), "t": i64(2)})
    with pytest.raises(ExportError, match="unsupported head op Slice .*steps other than 1"):
        REGISTRY["Slice"](e, node, "g", {0})

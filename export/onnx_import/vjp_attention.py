"""Vector-Jacobian products for the ops of transformer blocks, registered into `vjp.REGISTRY`: Gather at
constant positions (a Pad instead of vjp.py's general scatter), Pad (Swin's windows), Slice (the
class token, strided patch merging), GELU (the `Gelu` op, opset 20, exact and tanh forms; the Erf form is
Div, Erf, Add, Mul, each already a rule), Cast between floats, Pow with a constant exponent (decomposed
LayerNorm, tanh GELU), Expand, ReduceSum, Where. Attention itself is MatMul with two variable operands and
Softmax (`vjp.py`)."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto

from .emitter import Emitter
from .vjp import _gather, _refuse, _where, attributes, rule


def _constant(e: Emitter, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
    """The value of input `index` (None where it is left out); ExportError where it is not a constant."""
    if len(node.input) <= index or not node.input[index]:
        return None
    value = e.value(node.input[index])
    if value is None:
        raise _refuse(node, f"its {what} are not constants")
    return np.ravel(value).astype(np.int64)


@rule("Slice")
def _slice(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    """g put back where the slice took it, zeros elsewhere: per sliced axis with step s > 0, s - 1 zero
    rows after each row of g, then zeros before the start and after the end (or a crop past the end)."""
    x = node.input[0]
    shape = e.shape(x)
    rank = len(shape)
    if e.value(node.input[1]) is None or e.value(node.input[2]) is None:
        return {0: _slice_computed(e, node, g)}
    starts, ends = _constant(e, node, 1, "starts"), _constant(e, node, 2, "ends")
    axes = _constant(e, node, 3, "axes")
    steps = _constant(e, node, 4, "steps")
    axes = [int(a) % rank for a in (range(len(starts)) if axes is None else axes)]
    steps = [1] * len(axes) if steps is None else [int(s) for s in steps]
    for axis, start, end, step in zip(axes, starts, ends, steps):
        size = shape[axis]
        if step < 1:
            raise _refuse(node, "a negative step")
        if size is None:
            raise _refuse(node, f"axis {axis} has no static size")
        begin = min(max(int(start) + size if start < 0 else int(start), 0), size)
        stop = min(max(int(end) + size if end < 0 else int(end), 0), size)
        count = max(0, -(-(stop - begin) // step))
        if step > 1:  # interleave s - 1 zero rows after each row: length count * s
            spread = e.unsqueeze(g, [axis + 1])
            zeros = e.op("Mul", spread, e.const(0.0))
            spread = e.op("Concat", spread, *[zeros] * (step - 1), axis=axis + 1)
            target = e.op("Shape", g)
            merged = e.op("Concat", e.op("Slice", target, e.const([0], np.int64), e.const([axis], np.int64)),
                          e.const([count * step], np.int64),
                          e.op("Slice", target, e.const([axis + 1], np.int64), e.const([rank], np.int64)), axis=0)
            g = e.op("Reshape", spread, merged)
        after = size - begin - count * step
        if after < 0:
            g = e.op("Slice", g, e.const([0], np.int64), e.const([count * step + after], np.int64),
                     e.const([axis], np.int64))
            after = 0
        if begin or after:
            pads = [0] * (2 * rank)
            pads[axis], pads[rank + axis] = begin, after
            g = e.op("Pad", g, e.const(pads, np.int64))
    return {0: g}


def _slice_computed(e: Emitter, node: onnx.NodeProto, g: str) -> str:
    """Slice with starts or ends computed from shapes (Swin's crop after padding) and steps of 1: g padded
    with zeros by the clamped start before and the size minus the clamped end after, computed in the graph."""
    rank = len(e.shape(node.input[0]))
    axes = _constant(e, node, 3, "axes")
    steps = _constant(e, node, 4, "steps")
    if axes is None or (steps is not None and set(steps.tolist()) != {1}):
        raise _refuse(node, "starts or ends that are not constants, with default axes or steps other than 1")
    axes = [int(a) % rank for a in axes]
    sizes = e.op("Gather", e.op("Shape", node.input[0]), e.const(axes, np.int64))

    def clamped(name: str) -> str:  # a negative bound counts from the end; then within 0..size
        bound = e.op("Cast", name, to=TensorProto.INT64)
        bound = e.op("Where", e.op("Less", bound, e.const(0, np.int64)), e.op("Add", bound, sizes), bound)
        return e.op("Max", e.op("Min", bound, sizes), e.const(0, np.int64))

    begin = clamped(node.input[1])
    after = e.op("Sub", sizes, e.op("Max", clamped(node.input[2]), begin))
    pick = lambda vector, k: e.op("Slice", vector, e.const([k], np.int64), e.const([k + 1], np.int64))  # noqa: E731
    zero = e.const([0], np.int64)
    pads = [pick(begin, axes.index(a)) if a in axes else zero for a in range(rank)]
    pads += [pick(after, axes.index(a)) if a in axes else zero for a in range(rank)]
    return e.op("Pad", g, e.op("Concat", *pads, axis=0))


@rule("Pad")
def _pad(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    """Constant-mode Pad by pads >= 0 (constant, or computed from shapes: Swin's pad to a multiple of its
    window, where torch's pads are never negative): g sliced back from the begin pads, x's size along each
    axis."""
    mode = attributes(node).get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant" or (len(node.input) > 3 and node.input[3]):
        raise _refuse(node, "only constant-mode padding of every axis is differentiated")
    rank = len(e.shape(node.input[0]))
    pads = e.value(node.input[1])
    if pads is not None and (np.ravel(pads) < 0).any():
        raise _refuse(node, "negative pads")
    begin = e.op("Slice", e.op("Cast", node.input[1], to=TensorProto.INT64), e.const([0], np.int64),
                 e.const([rank], np.int64))
    end = e.op("Add", begin, e.op("Shape", node.input[0]))
    return {0: e.op("Slice", g, begin, end, e.const(list(range(rank)), np.int64))}


@rule("Gather")
def _gather_run(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    """Gather at a constant index or ascending run of indices (the class token; q, k and v of a stacked
    projection, torchvision's MultiheadAttention): g padded with zeros. vjp._gather's ScatterElements
    otherwise: onnxruntime's add-scatter cost 165 of the 364 ms of a ViT's backward pass (batch 8)."""
    x, indices = node.input
    shape, value = e.shape(x), e.value(indices)
    axis = int(attributes(node).get("axis", 0)) % len(shape)
    if value is None or value.ndim > 1 or shape[axis] is None:
        return _gather(e, node, g, wanted)
    run = np.ravel(value).astype(np.int64) % shape[axis]
    if run.size == 0 or not np.array_equal(run, np.arange(run[0], run[0] + run.size)):
        return _gather(e, node, g, wanted)
    if value.ndim == 0:
        g = e.unsqueeze(g, [axis])
    pads = [0] * (2 * len(shape))
    pads[axis], pads[len(shape) + axis] = int(run[0]), int(shape[axis] - run[0] - run.size)
    return {0: e.op("Pad", g, e.const(pads, np.int64))}


@rule("Gelu")
def _gelu(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    """Exact: d x Φ(x) = Φ(x) + x φ(x). tanh: y = x (1 + tanh u) / 2, u = √(2/π) (x + 0.044715 x³):
    dy/dx = (1 + t) / 2 + x (1 - t²) / 2 · √(2/π) (1 + 3 · 0.044715 x²)."""
    x = node.input[0]
    approximate = attributes(node).get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    square = e.op("Mul", x, x)
    if approximate == "tanh":
        root = math.sqrt(2 / math.pi)
        u = e.op("Mul", e.op("Add", x, e.op("Mul", e.op("Mul", square, x), e.const(0.044715))), e.const(root))
        t = e.op("Tanh", u)
        slope = e.op("Mul", e.op("Add", e.op("Mul", square, e.const(3 * 0.044715)), e.const(1.0)), e.const(root))
        inner = e.op("Mul", e.op("Mul", x, e.op("Sub", e.const(1.0), e.op("Mul", t, t))), slope)
        derivative = e.op("Mul", e.op("Add", e.op("Add", t, e.const(1.0)), inner), e.const(0.5))
    elif approximate == "none":
        cdf = e.op("Mul", e.op("Add", e.op("Erf", e.op("Mul", x, e.const(1 / math.sqrt(2)))), e.const(1.0)),
                   e.const(0.5))
        density = e.op("Mul", e.op("Exp", e.op("Mul", square, e.const(-0.5))), e.const(1 / math.sqrt(2 * math.pi)))
        derivative = e.op("Add", cdf, e.op("Mul", x, density))
    else:
        raise _refuse(node, f"approximate={approximate!r}")
    return {0: e.op("Mul", g, derivative)}


@rule("Cast")
def _cast(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    """A float-to-float32 Cast (the only kind whose input carries a gradient here): g passes."""
    if attributes(node).get("to") != TensorProto.FLOAT:
        raise _refuse(node, "only a Cast to float32 is differentiated")
    return {0: g}


@rule("Pow")
def _pow(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    x, exponent = node.input
    if 1 in wanted or e.value(exponent) is None:
        raise _refuse(node, "an exponent that is not a constant")
    p = float(np.ravel(e.value(exponent))[0]) if e.value(exponent).size == 1 else None
    if p is None:
        raise _refuse(node, "an exponent that is not a scalar")
    return {0: e.op("Mul", g, e.op("Mul", e.op("Pow", x, e.const(p - 1)), e.const(p)))}


@rule("Expand")
def _expand(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    return {0: e.like(g, node.input[0], node.output[0])}


@rule("ReduceSum")
def _reduce_sum(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    x, a = node.input[0], attributes(node)
    rank = len(e.shape(x))
    axes = _constant(e, node, 1, "axes")
    if axes is None or not len(axes):
        if a.get("noop_with_empty_axes", 0):
            return {0: g}
        axes = range(rank)
    axes = sorted(int(i) % rank for i in axes)
    if not a.get("keepdims", 1):
        g = e.unsqueeze(g, axes)
    return {0: e.op("Expand", g, e.op("Shape", x))}


@rule("Where")
def _where_rule(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    condition, y = node.input[0], node.output[0]
    gradients = {}
    if 1 in wanted:
        gradients[1] = e.like(_where(e, condition, g), node.input[1], y)
    if 2 in wanted:
        gradients[2] = e.like(e.op("Where", condition, e.const(0.0), g), node.input[2], y)
    return gradients


"""The op set's vector-Jacobian products: for y = op(x...) and g = d score / d y, the ONNX nodes that
compute d score / d x for each input asked for. Constant inputs are never asked for.

MaxPool's gradient goes to the first maximum of each window in row-major order (onnxruntime's
argmax); tied elements after it get none. Pooling and Conv are 2-D (4-D tensors, NCHW)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from ..errors import ExportError
from .emitter import Emitter

Vjp = Callable[[Emitter, onnx.NodeProto, str, set[int]], dict[int, str]]
REGISTRY: dict[str, Vjp] = {}
# ops with several outputs: their rule gets the gradient of each output (None where none reaches it)
MULTI_OUTPUT: dict[str, Callable[[Emitter, onnx.NodeProto, list[str | None], set[int]], dict[int, str]]] = {}


def rule(*op_types: str) -> Callable[[Vjp], Vjp]:
    def register(function: Vjp) -> Vjp:
        REGISTRY.update(dict.fromkeys(op_types, function))
        return function
    return register


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _refuse(node: onnx.NodeProto, why: str) -> ExportError:
    return ExportError(f"unsupported head op {node.op_type} (node {node.name or node.output[0]}): {why}")


@rule("Identity", "Dropout")
def _identity(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    return {0: g}


@rule("Flatten", "Reshape", "Squeeze", "Unsqueeze")
def _reshape(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    return {0: e.op("Reshape", g, e.op("Shape", node.input[0]))}


@rule("Gather")
def _gather(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    """y = x gathered at `indices` along `axis`: g scatter-added into zeros shaped like x, so that
    repeated indices add up. g is reshaped to x's shape with the axis of length len(indices)
    (0-d indices included), the indices broadcast along it."""
    if e.opset < 16:
        raise _refuse(node, "its gradient is a ScatterElements with reduction add, opset 16 or later")
    x, indices = node.input
    rank = len(e.shape(x))
    axis = int(attributes(node).get("axis", 0)) % rank
    shape = e.op("Shape", x)
    before = e.op("Slice", shape, e.const([0], np.int64), e.const([axis], np.int64))
    after = e.op("Slice", shape, e.const([axis + 1], np.int64), e.const([rank], np.int64))
    g = e.op("Reshape", g, e.op("Concat", before, e.const([-1], np.int64), after, axis=0))
    flat = e.op("Reshape", e.op("Cast", indices, to=onnx.TensorProto.INT64),
                e.const([1] * axis + [-1] + [1] * (rank - axis - 1), np.int64))
    zeros = e.op("ConstantOfShape", shape, value=helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1], [0.0]))
    return {0: e.op("ScatterElements", zeros, e.op("Expand", flat, e.op("Shape", g)), g, axis=axis, reduction="add")}


@rule("Transpose")
def _transpose(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    perm = attributes(node).get("perm") or list(reversed(range(len(e.shape(node.input[0])))))
    return {0: e.op("Transpose", g, perm=[int(i) for i in np.argsort(perm)])}


@rule("GlobalAveragePool", "ReduceMean")
def _mean(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    x, a = node.input[0], attributes(node)
    rank = len(e.shape(x))
    if node.op_type == "GlobalAveragePool":
        axes, keepdims = list(range(2, rank)), 1
    else:
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = e.value(node.input[1])
            if value is None:
                raise _refuse(node, "its axes are not a constant")
            axes = value.tolist()
        if not axes and a.get("noop_with_empty_axes", 0):
            return {0: g}
        axes, keepdims = sorted(int(i) % rank for i in (axes or range(rank))), a.get("keepdims", 1)
    if not keepdims:
        g = e.unsqueeze(g, axes)
    ratio = e.op("Div", e.cast_float(e.op("Size", node.output[0])), e.cast_float(e.op("Size", x)))
    return {0: e.op("Mul", e.op("Expand", g, e.op("Shape", x)), ratio)}


@rule("Add", "Sub")
def _add(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    y = node.output[0]
    signed = {0: g, 1: e.op("Neg", g) if node.op_type == "Sub" else g}
    return {i: e.like(signed[i], node.input[i], y) for i in wanted}


@rule("Mul")
def _mul(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    return {i: e.like(e.op("Mul", g, node.input[1 - i]), node.input[i], node.output[0]) for i in wanted}


@rule("Div")
def _div(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    a, b = node.input
    y = node.output[0]
    gradients = {}
    if 0 in wanted:
        gradients[0] = e.like(e.op("Div", g, b), a, y)
    if 1 in wanted:  # d(a/b)/db = -y/b
        gradients[1] = e.like(e.op("Neg", e.op("Div", e.op("Mul", g, y), b)), b, y)
    return gradients


@rule("Neg")
def _neg(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    return {0: e.op("Neg", g)}


@rule("Sqrt")
def _sqrt(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    return {0: e.op("Div", e.op("Mul", g, e.const(0.5)), node.output[0])}  # d sqrt(x) = 1 / (2 sqrt(x))


@rule("Reciprocal")
def _reciprocal(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    y = node.output[0]  # d (1/x) = -1/x² = -y²
    return {0: e.op("Neg", e.op("Mul", g, e.op("Mul", y, y)))}


@rule("Gemm")
def _gemm(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    a = attributes(node)
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    trans_a, trans_b = int(a.get("transA", 0)), int(a.get("transB", 0))
    A, B = node.input[:2]
    gradients = {}
    if 0 in wanted:  # Y = alpha A' B': dA' = alpha g B'^T
        gradients[0] = (e.op("Gemm", g, B, alpha=alpha, transB=1 - trans_b) if not trans_a
                        else e.op("Gemm", B, g, alpha=alpha, transA=trans_b, transB=1))
    if 1 in wanted:  # dB' = alpha A'^T g
        gradients[1] = (e.op("Gemm", A, g, alpha=alpha, transA=1 - trans_a) if not trans_b
                        else e.op("Gemm", g, A, alpha=alpha, transA=1, transB=trans_a))
    if 2 in wanted:
        gradients[2] = e.like(e.op("Mul", g, e.const(beta)), node.input[2], node.output[0])
    return gradients


@rule("MatMul")
def _matmul(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    A, B = node.input
    y = node.output[0]
    if min(len(e.shape(A)), len(e.shape(B))) < 2:
        raise _refuse(node, "a 1-D operand")

    def swapped(name: str) -> str:  # the last two axes swapped
        rank = len(e.shape(name))
        return e.op("Transpose", name, perm=[*range(rank - 2), rank - 1, rank - 2])

    gradients = {}
    if 0 in wanted:
        gradients[0] = e.like(e.op("MatMul", g, swapped(B)), A, y)
    if 1 in wanted:
        gradients[1] = e.like(e.op("MatMul", swapped(A), g), B, y)
    return gradients


def _where(e: Emitter, condition: str, g: str, otherwise: str | None = None) -> str:
    return e.op("Where", condition, g, otherwise or e.const(0.0))


@rule("Relu")
def _relu(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    return {0: _where(e, e.op("Greater", node.input[0], e.const(0.0)), g)}


@rule("LeakyRelu")
def _leaky_relu(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    alpha = float(attributes(node).get("alpha", 0.01))
    return {0: _where(e, e.op("Greater", node.input[0], e.const(0.0)), g, e.op("Mul", g, e.const(alpha)))}


@rule("Clip")
def _clip(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    x = node.input[0]
    inside = None
    for index, compare in ((1, "GreaterOrEqual"), (2, "LessOrEqual")):
        if len(node.input) > index and node.input[index]:
            test = e.op(compare, x, node.input[index])
            inside = test if inside is None else e.op("And", inside, test)
    return {0: g if inside is None else _where(e, inside, g)}


@rule("Sigmoid")
def _sigmoid(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    y = node.output[0]
    return {0: e.op("Mul", g, e.op("Mul", y, e.op("Sub", e.const(1.0), y)))}


@rule("HardSigmoid")
def _hard_sigmoid(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    a = attributes(node)
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    t = e.op("Add", e.op("Mul", node.input[0], e.const(alpha)), e.const(beta))
    inside = e.op("And", e.op("Greater", t, e.const(0.0)), e.op("Less", t, e.const(1.0)))
    return {0: _where(e, inside, e.op("Mul", g, e.const(alpha)))}


@rule("HardSwish")
def _hard_swish(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    x = node.input[0]  # y = x * clip(x / 6 + 1/2, 0, 1): dy/dx = 0 below -3, 1 above 3, x / 3 + 1/2 between
    middle = e.op("Mul", g, e.op("Add", e.op("Div", x, e.const(3.0)), e.const(0.5)))
    upper = _where(e, e.op("Greater", x, e.const(3.0)), g, middle)
    return {0: _where(e, e.op("Less", x, e.const(-3.0)), e.const(0.0), upper)}


@rule("Tanh")
def _tanh(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    y = node.output[0]
    return {0: e.op("Mul", g, e.op("Sub", e.const(1.0), e.op("Mul", y, y)))}


@rule("Erf")
def _erf(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    x = node.input[0]
    density = e.op("Exp", e.op("Neg", e.op("Mul", x, x)))
    return {0: e.op("Mul", g, e.op("Mul", density, e.const(2 / math.sqrt(math.pi))))}


@rule("Softmax")
def _softmax(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    y, axis = node.output[0], int(attributes(node).get("axis", -1))  # opset >= 13: along one axis
    weighted = e.reduce_sum(e.op("Mul", g, y), [axis], keepdims=1)
    return {0: e.op("Mul", y, e.op("Sub", g, weighted))}


def _split(e: Emitter, node: onnx.NodeProto, gradients: list[str | None], wanted: set[int]) -> dict[int, str]:
    """The outputs' gradients concatenated back (zeros for an output the score does not reach)."""
    parts = [g if g is not None else e.op("Mul", y, e.const(0.0)) for g, y in zip(gradients, node.output)]
    return {0: e.op("Concat", *parts, axis=int(attributes(node).get("axis", 0)))}


MULTI_OUTPUT["Split"] = _split


@rule("BatchNormalization")
def _batch_norm(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    if attributes(node).get("training_mode", 0) or len(node.output) > 1:
        raise _refuse(node, "training mode")
    x, scale, _, _, variance = node.input
    epsilon = float(attributes(node).get("epsilon", 1e-5))
    factor = e.op("Div", scale, e.op("Sqrt", e.op("Add", variance, e.const(epsilon))))
    channel_first = [-1] + [1] * (len(e.shape(x)) - 2)  # per channel, axis 1
    return {0: e.op("Mul", g, e.op("Reshape", factor, e.const(channel_first, np.int64)))}


@rule("LayerNormalization")
def _layer_norm(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    if len(node.output) > 1 or 0 not in wanted or wanted - {0}:
        raise _refuse(node, "only the gradient of its input, from its first output")
    a = attributes(node)
    x, gamma = node.input[:2]
    rank = len(e.shape(x))
    axes = list(range(int(a.get("axis", -1)) % rank, rank))
    count = float(np.prod([e.shape(x)[i] for i in axes]))

    def mean(name: str) -> str:
        return e.op("Mul", e.reduce_sum(name, axes, keepdims=1), e.const(1 / count))

    centred = e.op("Sub", x, mean(x))
    inverse = e.op("Reciprocal", e.op("Sqrt", e.op("Add", mean(e.op("Mul", centred, centred)),
                                                      e.const(float(a.get("epsilon", 1e-5))))))
    normed = e.op("Mul", centred, inverse)
    scaled = e.op("Mul", g, gamma)  # dx = (ĝ - mean ĝ - x̂ mean(ĝ x̂)) / σ
    inner = e.op("Sub", e.op("Sub", scaled, mean(scaled)), e.op("Mul", normed, mean(e.op("Mul", scaled, normed))))
    return {0: e.op("Mul", inner, inverse)}


@rule("Concat")
def _concat(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    rank = len(e.shape(node.output[0]))
    axis = int(attributes(node)["axis"]) % rank
    sizes = [e.shape(name)[axis] for name in node.input]
    if None in sizes:
        raise _refuse(node, f"its inputs' sizes along axis {axis} are unknown")
    parts = [f"{e.prefix}split_{len(e.nodes)}_{i}" for i in range(len(sizes))]
    e.nodes.append(helper.make_node("Split", [g, e.const(sizes, np.int64)], parts, axis=axis, name=parts[0]))
    return {i: parts[i] for i in wanted}


def _window(e: Emitter, node: onnx.NodeProto, kernel: list[int]) -> tuple[list[int], list[int], list[int]]:
    """(strides, dilations, begin pads) of a 2-D window op."""
    a = attributes(node)
    if len(e.shape(node.input[0])) != 4:
        raise _refuse(node, "only 2-D windows (4-D tensors) are differentiated")
    strides, dilations = list(a.get("strides", [1, 1])), list(a.get("dilations", [1, 1]))
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        return strides, dilations, list(a.get("pads", [0, 0, 0, 0]))[:2]
    if auto_pad == "VALID":
        return strides, dilations, [0, 0]
    sizes = e.shape(node.input[0])[2:]
    totals = [max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
              for n, s, k, d in zip(sizes, strides, kernel, dilations)]
    return strides, dilations, [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]


def _transposed(e: Emitter, g: str, weight: str, node: onnx.NodeProto, kernel: list[int], group: int) -> str:
    """The adjoint of a 2-D window op: ConvTranspose of g, cropped or zero-padded to the input's H, W."""
    strides, dilations, begin = _window(e, node, kernel)
    spread = e.op("ConvTranspose", g, weight, strides=strides, dilations=dilations, group=group,
                  pads=[*begin, 0, 0])
    full = [(o - 1) * s + (k - 1) * d + 1 - b
            for o, s, k, d, b in zip(e.shape(node.output[0])[2:], strides, kernel, dilations, begin)]
    height, width = e.shape(node.input[0])[2:]
    if full[0] > height or full[1] > width:
        spread = e.op("Slice", spread, e.const([0, 0], np.int64), e.const([height, width], np.int64),
                      e.const([2, 3], np.int64))
    if full[0] < height or full[1] < width:
        spread = e.op("Pad", spread, e.const([0, 0, 0, 0, 0, 0, max(height - full[0], 0),
                                              max(width - full[1], 0)], np.int64))
    return spread


@rule("Conv")
def _conv(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    if wanted != {0}:
        raise _refuse(node, "a weight or bias that is not a constant")
    kernel = list(e.shape(node.input[1])[2:])
    group = int(attributes(node).get("group", 1))
    return {0: _transposed(e, g, node.input[1], node, kernel, group)}


@rule("AveragePool")
def _average_pool(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    a = attributes(node)
    if a.get("ceil_mode", 0) and a.get("count_include_pad", 0):
        raise _refuse(node, "ceil_mode with count_include_pad")
    kernel = list(a["kernel_shape"])
    strides, dilations, begin = _window(e, node, kernel)
    channels, height, width = e.shape(node.input[0])[1:]
    counts = np.float32(kernel[0] * kernel[1])
    if not a.get("count_include_pad", 0):  # border windows average over their real elements only
        inside = [np.array([[0 <= o * s - b + t * d < n for t in range(k)] for o in range(out)]).sum(1)
                  for out, s, b, k, d, n in zip(e.shape(node.output[0])[2:], strides, begin, kernel, dilations,
                                                (height, width))]
        counts = np.outer(*inside).astype(np.float32)
    ones = e.const(np.ones((channels, 1, *kernel)))
    return {0: _transposed(e, e.op("Div", g, e.const(counts)), ones, node, kernel, channels)}


@rule("MaxPool")
def _max_pool(e: Emitter, node: onnx.NodeProto, g: str, wanted: set[int]) -> dict[int, str]:
    kernel = list(attributes(node)["kernel_shape"])
    strides, dilations, begin = _window(e, node, kernel)
    x, y = node.input[0], node.output[0]
    channels, height, width = e.shape(x)[1:]
    out = e.shape(y)[2:]
    taps = kernel[0] * kernel[1]
    picks = np.zeros((channels * taps, 1, *kernel), np.float32)  # channel c, tap t -> output channel c*taps+t
    for c in range(channels):
        for t in range(taps):
            picks[c * taps + t, 0, t // kernel[1], t % kernel[1]] = 1
    ends = [max((o - 1) * s + (k - 1) * d + 1 - n - b, 0)
            for o, s, k, d, n, b in zip(out, strides, kernel, dilations, (height, width), begin)]
    weight = e.const(picks)
    windows = e.op("Conv", x, weight, group=channels, strides=strides, dilations=dilations, pads=[*begin, *ends])
    windows = e.op("Reshape", windows, e.const([-1, channels, taps, *out], np.int64))
    real = np.array([[[0 <= o * s - b + t * d < n for o in range(size)] for t in range(k)]
                     for size, s, b, k, d, n in zip(out, strides, begin, kernel, dilations, (height, width))])
    real = (real[0][:, None, :, None] & real[1][None, :, None, :]).reshape(taps, *out).astype(np.float32)
    hits = e.op("Mul", e.cast_float(e.op("Equal", windows, e.unsqueeze(y, [2]))), e.const(real))
    first = e.op("Mul", hits, e.cast_float(e.op("Equal", e.op("CumSum", hits, e.const(2, np.int64)), e.const(1.0))))
    columns = e.op("Mul", first, e.unsqueeze(g, [2]))
    columns = e.op("Reshape", columns, e.const([-1, channels * taps, *out], np.int64))
    return {0: _transposed(e, columns, weight, node, kernel, channels)}

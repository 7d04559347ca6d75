"""tf2onnx conversion of the Grad-CAM function, with the op handlers its gradient graph needs.

tf2onnx 1.17 returns a model even when a handler produced a wrong graph, so the result is
checked here (inputs, outputs) and, numerically, by `export.verify`.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import gc
import logging
import types
from typing import Iterator

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx
import tf2onnx.optimizer
from onnx import TensorProto, helper

from .errors import ExportError, one_line


def dynamic_stitch(ctx, node, name, args):  # noqa: ANN001 (tf2onnx's handler signature)
    """DynamicStitch with TensorFlow's semantics: later partitions overwrite earlier ones.

    TF's gradient of Mean/Sum builds `reduced_shape` with DynamicStitch whose index lists
    overlap. tf2onnx's own handler sizes the output by the total row count (for a rank-4
    Mean: [N, 1, 1, C, 0, 0]), which breaks a dynamic-batch graph at run time. Here the
    output has max(index) + 1 rows and the partitions are scattered one after another.
    """
    del name, args
    partitions = len(node.input) // 2
    index_inputs, data_inputs = node.input[:partitions], node.input[partitions:]
    data_rank = len(ctx.get_shape(data_inputs[0]))
    dtype = ctx.get_dtype(node.output[0])
    outputs = node.output
    ctx.remove_node(node.name)

    indices = [ctx.make_node("Cast", [i], attr={"to": TensorProto.INT64}).output[0] for i in index_inputs]
    all_indices = ctx.make_node("Concat", indices, attr={"axis": 0}).output[0]
    largest = ctx.make_node("ReduceMax", [all_indices], attr={"keepdims": 1}).output[0]
    one = ctx.make_const(tf2onnx.utils.make_name("one"), _int64([1])).output[0]
    rows = ctx.make_node("Add", [largest, one]).output[0]
    data_shape = ctx.make_node("Shape", [data_inputs[0]]).output[0]
    row_shape = ctx.make_node("Slice", [data_shape, one, ctx.make_const(
        tf2onnx.utils.make_name("rank"), _int64([data_rank])).output[0]]).output[0]
    out_shape = ctx.make_node("Concat", [rows, row_shape], attr={"axis": 0}).output[0]
    zero = helper.make_tensor("value", dtype, dims=[1], vals=[0])
    stitched = ctx.make_node("ConstantOfShape", [out_shape], attr={"value": zero}).output[0]
    for position, (index, data) in enumerate(zip(indices, data_inputs)):
        if data_rank > 1:
            axes = ctx.make_const(tf2onnx.utils.make_name("axes"), _int64(list(range(1, data_rank))))
            index = ctx.make_node("Unsqueeze", [index, axes.output[0]]).output[0]
            index = ctx.make_node("Expand", [index, ctx.make_node("Shape", [data]).output[0]]).output[0]
        last = position == partitions - 1
        stitched = ctx.make_node(
            "ScatterElements", [stitched, index, data], attr={"axis": 0},
            outputs=outputs if last else None,
        ).output[0]


def _int64(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def release_memory() -> None:
    """Collect reference cycles, then hand glibc's free heap back to the system. Without the
    trim, memory that conversion freed stays in the process and the float64 self-check is
    stacked on top of it (ResNet50 conv3+conv4: 4.6 GiB peak; with it, 3.9 GiB)."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the collection alone still helps
        pass


def _collect_then_deepcopy(graph: object) -> object:
    """tf2onnx deep-copies the whole graph (weights included) before each optimizer pass and
    leaves the old copy in a reference cycle; without a collection these pile up (measured
    on ResNet50: 3.0 -> 8.6 GB peak RSS). Collecting first keeps about two copies alive."""
    gc.collect()
    return copy.deepcopy(graph)


tf2onnx.optimizer.copy = types.SimpleNamespace(deepcopy=_collect_then_deepcopy)


def relu_grad(ctx, node, name, args):  # noqa: ANN001
    """ReluGrad(gradients, features) = gradients where features > 0. No tf2onnx converter."""
    del name, args
    _gradient_where_active(ctx, node, ceiling=None)


def relu6_grad(ctx, node, name, args):  # noqa: ANN001
    """Relu6Grad(gradients, features) = gradients where 0 < features < 6. No tf2onnx converter."""
    del name, args
    _gradient_where_active(ctx, node, ceiling=6.0)


def _gradient_where_active(ctx, node, ceiling: float | None) -> None:  # noqa: ANN001
    """Replace `node` by Where(0 < features [< ceiling], gradients, 0)."""
    gradients, features = node.input
    dtype, outputs = ctx.get_dtype(node.output[0]), node.output
    ctx.remove_node(node.name)
    zero = ctx.make_const(tf2onnx.utils.make_name("zero"), np.zeros([], _NUMPY[dtype])).output[0]
    active = ctx.make_node("Greater", [features, zero]).output[0]
    if ceiling is not None:
        top = ctx.make_const(tf2onnx.utils.make_name("ceiling"), np.full([], ceiling, _NUMPY[dtype])).output[0]
        below = ctx.make_node("Less", [features, top]).output[0]
        active = ctx.make_node("And", [active, below]).output[0]
    ctx.make_node("Where", [active, gradients, zero], outputs=outputs)


def depthwise_backprop_input(ctx, node, name, args):  # noqa: ANN001
    """DepthwiseConv2dNativeBackpropInput as a grouped ConvTranspose. No tf2onnx converter.

    The depthwise filter [kh, kw, C, m] is the filter [kh, kw, 1, C*m] of a convolution with
    C groups; tf2onnx's own Conv2DBackpropInput handler then does the padding arithmetic.
    """
    del name, args
    from tf2onnx.onnx_opset.nn import ConvTranspose

    height, width, channels, multiplier = ctx.get_shape(node.input[1])
    grouped_shape = [height, width, 1, channels * multiplier]
    shape = ctx.make_const(tf2onnx.utils.make_name("grouped_filter_shape"), _int64(grouped_shape)).output[0]
    grouped = ctx.make_node("Reshape", [node.input[1], shape]).output[0]
    ctx.set_shape(grouped, grouped_shape)
    ctx.set_dtype(grouped, ctx.get_dtype(node.input[1]))
    ctx.replace_input(node, node.input[1], grouped, 1)
    node.type = "Conv2DBackpropInput"
    ConvTranspose.version_11(ctx, node)
    node.set_attr("group", channels)


def max_pool_grad(ctx, node, name, args):  # noqa: ANN001
    """MaxPoolGrad(x, y, dy): dy routed to each window's maximum of x. No tf2onnx converter.

    ONNX MaxPool also returns the flat (NCHW) index of each window's maximum; the gradient is
    scattered there with reduction="add" (overlapping windows add up, as in TensorFlow).
    """
    del name, args
    x, _, gradient = node.input
    kernel = list(node.get_attr_value("ksize"))
    strides = list(node.get_attr_value("strides"))
    padding = node.get_attr_value("padding")
    padding = padding.decode() if isinstance(padding, bytes) else padding
    tf2onnx.utils.make_sure(node.get_attr_value("data_format", b"NHWC") in (b"NHWC", "NHWC"),
                            "MaxPoolGrad: only NHWC")
    height, width = ctx.get_shape(x)[1:3]
    outputs, dtype = node.output, ctx.get_dtype(node.output[0])
    ctx.remove_node(node.name)
    pads = [0, 0, 0, 0]
    if padding == "SAME":
        tf2onnx.utils.make_sure(height is not None and height > 0 and width is not None and width > 0,
                                "MaxPoolGrad: SAME padding needs a known spatial size")
        totals = [max((-(-size // stride) - 1) * stride + k - size, 0)
                  for size, stride, k in zip((height, width), strides[1:3], kernel[1:3])]
        pads = [totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2]
    x_nchw = ctx.make_node("Transpose", [x], attr={"perm": [0, 3, 1, 2]}).output[0]
    pool = ctx.make_node("MaxPool", [x_nchw], output_count=2, attr={
        "kernel_shape": kernel[1:3], "strides": strides[1:3], "pads": pads})
    flat = ctx.make_const(tf2onnx.utils.make_name("flat"), _int64([-1])).output[0]
    indices = ctx.make_node("Reshape", [pool.output[1], flat]).output[0]
    gradient_nchw = ctx.make_node("Transpose", [gradient], attr={"perm": [0, 3, 1, 2]}).output[0]
    updates = ctx.make_node("Reshape", [gradient_nchw, flat]).output[0]
    shape = ctx.make_node("Shape", [x_nchw]).output[0]
    size = ctx.make_node("ReduceProd", [shape], attr={"keepdims": 1}).output[0]
    zero = helper.make_tensor("value", dtype, dims=[1], vals=[0])
    zeros = ctx.make_node("ConstantOfShape", [size], attr={"value": zero}).output[0]
    scattered = ctx.make_node("ScatterElements", [zeros, indices, updates],
                              attr={"axis": 0, "reduction": "add"}).output[0]
    unflat = ctx.make_node("Reshape", [scattered, shape]).output[0]
    ctx.make_node("Transpose", [unflat], attr={"perm": [0, 2, 3, 1]}, outputs=outputs)


def erfc(ctx, node, name, args):  # noqa: ANN001
    """Erfc(x) = 1 - Erf(x) (Keras' exact GELU). No tf2onnx converter."""
    del name, args
    (x,), outputs, dtype = node.input, node.output, ctx.get_dtype(node.output[0])
    ctx.remove_node(node.name)
    one = ctx.make_const(tf2onnx.utils.make_name("one"), np.ones([], _NUMPY[dtype])).output[0]
    ctx.make_node("Sub", [one, ctx.make_node("Erf", [x]).output[0]], outputs=outputs)


def rsqrt_grad(ctx, node, name, args):  # noqa: ANN001
    """RsqrtGrad(y, dy) = dy * -0.5 * y³, y = 1/sqrt(x) (LayerNormalization). No converter."""
    del name, args
    (y, gradient), outputs, dtype = node.input, node.output, ctx.get_dtype(node.output[0])
    ctx.remove_node(node.name)
    half = ctx.make_const(tf2onnx.utils.make_name("minus_half"), np.full([], -0.5, _NUMPY[dtype])).output[0]
    cube = ctx.make_node("Mul", [ctx.make_node("Mul", [y, y]).output[0], y]).output[0]
    ctx.make_node("Mul", [ctx.make_node("Mul", [gradient, cube]).output[0], half], outputs=outputs)


@contextlib.contextmanager
def depthwise_grouped_convolutions() -> Iterator[None]:
    """Run Keras' grouped convolutions with one input channel per group (ConvNeXt's
    depthwise Conv2D(groups=C)) as tf.nn.depthwise_conv2d.

    Keras' TensorFlow backend wraps every grouped convolution in a `jit_compile=True`
    function (TF's CPU kernel lacks groups); tf2onnx cannot look inside such a function and
    leaves a StatefulPartitionedCall in the graph, and the float64 self-check reference
    spent over 15 minutes in XLA's gradients on ConvNeXt-Tiny. The depthwise op computes the
    same thing, converts forward and backward, and runs eagerly in float64.
    """
    from keras.src.backend.tensorflow import nn as keras_tf_nn

    original = keras_tf_nn.conv

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):  # noqa: ANN001
        strides2 = (strides, strides) if isinstance(strides, int) else tuple(strides)
        dilations2 = (dilation_rate, dilation_rate) if isinstance(dilation_rate, int) else tuple(dilation_rate)
        channels = inputs.shape[-1]
        depthwise = (
            len(inputs.shape) == 4 and data_format in (None, "channels_last")
            and keras.config.image_data_format() == "channels_last"
            and kernel.shape[-2] == 1 and channels and channels > 1 and kernel.shape[-1] % channels == 0
            and (max(strides2) == 1 or max(dilations2) == 1)
        )
        if not depthwise:
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        height, width, _, outputs = kernel.shape
        filters = tf.reshape(kernel, [height, width, channels, outputs // channels])
        return tf.nn.depthwise_conv2d(inputs, filters, strides=[1, *strides2, 1],
                                      padding=padding.upper(), dilations=dilations2)

    keras_tf_nn.conv = conv
    try:
        yield
    finally:
        keras_tf_nn.conv = original


def shape_n(ctx, node, name, args):  # noqa: ANN001
    """ShapeN: one Shape per input. tf2onnx has no converter."""
    del name, args
    inputs, outputs = list(node.input), list(node.output)
    dtype = ctx.get_dtype(outputs[0])
    ctx.remove_node(node.name)
    for tensor, output in zip(inputs, outputs):
        shape = ctx.make_node("Shape", [tensor]).output[0]
        ctx.make_node("Cast", [shape], attr={"to": dtype}, outputs=[output])


def broadcast_gradient_args(ctx, node, name, args):  # noqa: ANN001
    """BroadcastGradientArgs(s0, s1): for each side, the axes it was broadcast along.

    Both shapes are left-padded with 1 to the same rank; side i reduces the axes where its
    padded shape is 1. (TF returns no axes when the shapes are equal; reducing size-1 axes
    there too is harmless, as the gradient is reshaped back to the input's shape.)
    tf2onnx has no converter.
    """
    del name, args
    shapes, outputs = list(node.input), list(node.output)
    ranks = [ctx.get_shape(shape) for shape in shapes]
    tf2onnx.utils.make_sure(
        all(rank is not None and len(rank) == 1 and rank[0] >= 0 for rank in ranks),
        "BroadcastGradientArgs needs shapes of known rank",
    )
    rank = max(r[0] for r in ranks)
    dtype = ctx.get_dtype(outputs[0])
    ctx.remove_node(node.name)
    one = ctx.make_const(tf2onnx.utils.make_name("one"), _int64([1])).output[0]
    flat = ctx.make_const(tf2onnx.utils.make_name("flat"), _int64([-1])).output[0]
    for shape, (length,), output in zip(shapes, ranks, outputs):
        shape = ctx.make_node("Cast", [shape], attr={"to": TensorProto.INT64}).output[0]
        if length < rank:
            ones = ctx.make_const(tf2onnx.utils.make_name("ones"), _int64([1] * (rank - length))).output[0]
            shape = ctx.make_node("Concat", [ones, shape], attr={"axis": 0}).output[0]
        is_one = ctx.make_node("Equal", [shape, one]).output[0]
        axes = ctx.make_node("NonZero", [is_one]).output[0]
        axes = ctx.make_node("Reshape", [axes, flat]).output[0]
        ctx.make_node("Cast", [axes], attr={"to": dtype}, outputs=[output])


_NUMPY = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16}

# The gradient graph needs these; tf2onnx 1.17 lacks them or (DynamicStitch) gets them wrong.
HANDLERS = {
    "DynamicStitch": (dynamic_stitch, []),
    "ParallelDynamicStitch": (dynamic_stitch, []),
    "ReluGrad": (relu_grad, []),
    "Relu6Grad": (relu6_grad, []),
    "DepthwiseConv2dNativeBackpropInput": (depthwise_backprop_input, []),
    "ShapeN": (shape_n, []),
    "Erfc": (erfc, []),
    "RsqrtGrad": (rsqrt_grad, []),
    "MaxPoolGrad": (max_pool_grad, []),
    "BroadcastGradientArgs": (broadcast_gradient_args, []),
}


def convert(
    function: tf.types.experimental.GenericFunction, opset: int, outputs: tuple[str, ...]
) -> onnx.ModelProto:
    """Convert the traced function; refuse graphs whose inputs or outputs break the contract."""
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    release_memory()  # drop what an earlier conversion left behind
    try:
        model, _ = tf2onnx.convert.from_function(
            function,
            input_signature=function.input_signature,
            opset=opset,
            custom_op_handlers=HANDLERS,
        )
    except Exception as error:
        raise ExportError(f"tf2onnx could not convert the graph: {one_line(error)}") from None
    release_memory()
    unconverted = sorted({node.op_type for node in model.graph.node if not onnx.defs.has(node.op_type, node.domain)})
    if unconverted:
        raise ExportError(f"tf2onnx left TensorFlow ops it cannot convert: {', '.join(unconverted)}")
    inputs = [value.name for value in model.graph.input]
    if inputs != [spec.name for spec in function.input_signature]:
        raise ExportError(
            f"the converted graph wants inputs {inputs}; a tensor captured from outside the "
            "traced function (e.g. a Normalization layer's mean) became an input"
        )
    produced = sorted(value.name for value in model.graph.output)
    if produced != sorted(outputs):
        raise ExportError(f"the converted graph has outputs {produced}, expected {sorted(outputs)}")
    return model


def convert_bare(model: keras.Model, opset: int, input_name: str = "input") -> onnx.ModelProto:
    """The bare Keras model (no onnxcam wrapper: its own preprocessing-free input, its logits out) as
    anyone would convert it for the ONNX import: `tf2onnx.convert.from_keras` with a dynamic batch.
    With this module's op handlers (Keras' exact GELU uses Erfc, which tf2onnx 1.17 leaves unconverted)
    and grouped convolutions run as depthwise ones (ConvNeXt's, which tf2onnx cannot see into)."""
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    height, width, channels = model.input_shape[1:]
    signature = [tf.TensorSpec([None, height, width, channels], tf.float32, name=input_name)]
    release_memory()
    with depthwise_grouped_convolutions():
        converted, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset,
                                                  custom_op_handlers=HANDLERS)
    release_memory()
    unconverted = sorted({node.op_type for node in converted.graph.node if not onnx.defs.has(node.op_type, node.domain)})
    if unconverted:
        raise ExportError(f"tf2onnx left TensorFlow ops it cannot convert: {', '.join(unconverted)}")
    return converted

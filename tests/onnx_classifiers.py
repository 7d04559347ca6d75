"""Small ONNX classifiers written with onnx.helper, shaped like torch.onnx.export's output, for the
ONNX import's tests (no framework)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 16
CHANNELS = 5
CLASSES = 4


def write_classifier(
    path: str | Path, head: str = "gemm", softmax: bool = True, layout: str = "nchw", seed: int = 0,
    inputs: int = 1, dynamic: bool = False,
) -> Path:
    """conv 3x3 -> relu -> (head) -> [softmax]. head: gemm (GlobalAveragePool, Flatten, Gemm transB=1),
    matmul (ReduceMean over H,W, MatMul + Add), sigmoid_gemm (a Sigmoid between pooling and Gemm),
    flat (Flatten of the conv map straight into Gemm: no pooling)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "conv.weight": rng.standard_normal((CHANNELS, 3, 3, 3)).astype(np.float32) * 0.3,
        "conv.bias": rng.standard_normal(CHANNELS).astype(np.float32) * 0.1,
        "fc.weight": rng.standard_normal((CLASSES, CHANNELS)).astype(np.float32),
        "fc.bias": rng.standard_normal(CLASSES).astype(np.float32),
        "fc.matrix": rng.standard_normal((CHANNELS, CLASSES)).astype(np.float32),
        "flat.weight": rng.standard_normal((CLASSES, CHANNELS * SIZE * SIZE)).astype(np.float32) * 0.01,
        "axes_hw": np.array([2, 3], np.int64),
    }
    node = helper.make_node
    nodes = []
    source = "input"
    if layout == "nhwc":
        nodes.append(node("Transpose", ["input"], ["input_nchw"], perm=[0, 3, 1, 2]))
        source = "input_nchw"
    nodes += [node("Conv", [source, "conv.weight", "conv.bias"], ["conv_out"], name="/conv/Conv", pads=[1, 1, 1, 1]),
              node("Relu", ["conv_out"], ["features"], name="/relu/Relu")]
    if head == "gemm":
        nodes += [node("GlobalAveragePool", ["features"], ["pooled"], name="/pool/GlobalAveragePool"),
                  node("Flatten", ["pooled"], ["flat"], name="/Flatten"),
                  node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1)]
    elif head == "matmul":
        nodes += [node("ReduceMean", ["features"], ["pooled"], name="/ReduceMean", axes=[2, 3], keepdims=0),
                  node("MatMul", ["pooled", "fc.matrix"], ["product"], name="/fc/MatMul"),
                  node("Add", ["product", "fc.bias"], ["logits"], name="/fc/Add")]
    elif head == "sigmoid_gemm":
        nodes += [node("GlobalAveragePool", ["features"], ["pooled"], name="/pool/GlobalAveragePool"),
                  node("Flatten", ["pooled"], ["flat"], name="/Flatten"),
                  node("Sigmoid", ["flat"], ["gated"], name="/gate/Sigmoid"),
                  node("Gemm", ["gated", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1)]
    elif head == "flat":
        nodes += [node("Flatten", ["features"], ["flat"], name="/Flatten"),
                  node("Gemm", ["flat", "flat.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1)]
    output = "logits"
    if softmax:
        nodes.append(node("Softmax", ["logits"], ["probabilities_out"], name="/Softmax", axis=1))
        output = "probabilities_out"
    spatial = ["H", "W"] if dynamic else [SIZE, SIZE]
    shape = ["batch", 3, *spatial] if layout == "nchw" else ["batch", *spatial, 3]
    graph_inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)]
    if inputs == 2:
        graph_inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", 1]))
    used = {name for n in nodes for name in n.input}
    graph = helper.make_graph(
        nodes, "classifier", graph_inputs,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(value, name) for name, value in arrays.items() if name in used],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return Path(path)


Random = Callable[..., np.ndarray]  # r(*shape, scale=1.0): seeded standard-normal float32 weights
# head name -> (the builder of its nodes from `features` to `logits`, given r and the shared constants; opset)
Built = tuple[list[onnx.NodeProto], dict[str, np.ndarray]]  # the head's nodes, its own extra constants
HEAD_BUILDERS: dict[str, tuple[Callable[[Random, dict[str, np.ndarray]], Built], int]] = {}


def head_builder(name: str, opset: int = 17):
    """Register a head builder under `name` (shaped like vjp.py's `rule`)."""
    def register(build):
        HEAD_BUILDERS[name] = (build, opset)
        return build
    return register


@head_builder("vgg")
def _vgg(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """MaxPool, Flatten, Gemm, Relu, Gemm, Relu, Gemm."""
    node = helper.make_node
    nodes = [node("MaxPool", ["features"], ["pool"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
             node("Flatten", ["pool"], ["flat"], name="/Flatten"),
             node("Gemm", ["flat", "vgg1.weight", "vgg1.bias"], ["fc1"], name="/fc1/Gemm", transB=1),
             node("Relu", ["fc1"], ["act1"], name="/act1/Relu"),
             node("Gemm", ["act1", "vgg2.weight", "vgg2.bias"], ["fc2"], name="/fc2/Gemm", transB=1),
             node("Relu", ["fc2"], ["act2"], name="/act2/Relu"),
             node("Gemm", ["act2", "vgg3.weight"], ["logits"], name="/fc3/Gemm", transB=1)]
    return nodes, {}


@head_builder("mlp")
def _mlp(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """GlobalAveragePool, Flatten, Gemm, Relu, Gemm."""
    node = helper.make_node
    nodes = [node("GlobalAveragePool", ["features"], ["pooled"], name="/pool/GlobalAveragePool"),
             node("Flatten", ["pooled"], ["flat"], name="/Flatten"),
             node("Gemm", ["flat", "mlp1.weight", "mlp1.bias"], ["hidden"], name="/fc1/Gemm", transB=1),
             node("Relu", ["hidden"], ["act"], name="/act/Relu"),
             node("Gemm", ["act", "mlp2.weight"], ["logits"], name="/fc2/Gemm", transB=1)]
    return nodes, {}


@head_builder("convnext")
def _convnext(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """GlobalAveragePool, Flatten, LayerNormalization, Gemm."""
    node = helper.make_node
    nodes = [node("GlobalAveragePool", ["features"], ["pooled"], name="/pool/GlobalAveragePool"),
             node("Flatten", ["pooled"], ["flat"], name="/Flatten"),
             node("LayerNormalization", ["flat", "ln.scale", "ln.bias"], ["normed"], name="/norm/LayerNorm",
                  axis=-1, epsilon=1e-6),
             node("Gemm", ["normed", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1)]
    return nodes, {}


@head_builder("layernorm2d")
def _layernorm2d(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """torchvision's ConvNeXt: GlobalAveragePool, Transpose to [N, 1, 1, C], LayerNormalization,
    Transpose back, Flatten, Gemm."""
    node = helper.make_node
    nodes = [node("GlobalAveragePool", ["features"], ["pooled"], name="/pool/GlobalAveragePool"),
             node("Transpose", ["pooled"], ["pooled_last"], name="/norm/Transpose", perm=[0, 2, 3, 1]),
             node("LayerNormalization", ["pooled_last", "ln.scale", "ln.bias"], ["normed_last"],
                  name="/norm/LayerNorm", axis=-1, epsilon=1e-6),
             node("Transpose", ["normed_last"], ["normed"], name="/norm/Transpose_1", perm=[0, 3, 1, 2]),
             node("Flatten", ["normed"], ["flat"], name="/Flatten"),
             node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1)]
    return nodes, {}


@head_builder("keras_layernorm")
def _keras_layernorm(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """Keras' ConvNeXt head as tf2onnx writes it: GlobalAveragePool, Squeeze, the norm from
    ReduceMean, Neg, Sub, Mul, Add, Sqrt, Reciprocal (tf.nn.moments, rsqrt), then MatMul + Add."""
    node = helper.make_node
    nodes = [node("GlobalAveragePool", ["features"], ["pooled"], name="/pool/GlobalAveragePool"),
             node("Squeeze", ["pooled", "i64_axes_23"], ["flat"], name="/pool/Squeeze"),
             node("ReduceMean", ["flat"], ["mean"], name="/norm/moments/mean", axes=[1], keepdims=1),
             node("Neg", ["mean"], ["minus_mean"], name="/norm/Neg"),
             node("Sub", ["flat", "mean"], ["centred"], name="/norm/moments/SquaredDifference"),
             node("Mul", ["centred", "centred"], ["squared"], name="/norm/moments/SquaredDifference_1"),
             node("ReduceMean", ["squared"], ["variance"], name="/norm/moments/variance", axes=[1], keepdims=1),
             node("Add", ["variance", "f_epsilon"], ["variance_eps"], name="/norm/add"),
             node("Sqrt", ["variance_eps"], ["sigma"], name="/norm/Rsqrt"),
             node("Reciprocal", ["sigma"], ["inverse"], name="/norm/Rsqrt_1"),
             node("Mul", ["inverse", "ln.scale"], ["factor"], name="/norm/mul"),
             node("Mul", ["flat", "factor"], ["scaled"], name="/norm/mul_2"),
             node("Mul", ["minus_mean", "factor"], ["offset"], name="/norm/mul_1"),
             node("Add", ["offset", "ln.bias"], ["offset_bias"], name="/norm/add_1"),
             node("Add", ["scaled", "offset_bias"], ["normed"], name="/norm/add_2"),
             node("MatMul", ["normed", "fc.weight_t"], ["product"], name="/logits/MatMul"),
             node("Add", ["product", "fc.bias"], ["logits"], name="/logits/Add")]
    extra = {"i64_axes_23": np.array([2, 3], np.int64), "f_epsilon": np.array(1e-3, np.float32),
             "fc.weight_t": np.ascontiguousarray(arrays["fc.weight"].T)}
    return nodes, extra


@head_builder("mobilenet")
def _mobilenet(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """GlobalAveragePool, Conv 1x1, HardSwish, Flatten, Gemm."""
    node = helper.make_node
    nodes = [node("GlobalAveragePool", ["features"], ["pooled"], name="/pool/GlobalAveragePool"),
             node("Conv", ["pooled", "se.weight", "se.bias"], ["expanded"], name="/expand/Conv"),
             node("HardSwish", ["expanded"], ["act"], name="/act/HardSwish"),
             node("Flatten", ["act"], ["flat"], name="/Flatten"),
             node("Gemm", ["flat", "se_fc.weight"], ["logits"], name="/fc/Gemm", transB=1)]
    return nodes, {}


@head_builder("squeezenet")
def _squeezenet(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """Dropout, Conv 1x1 to classes, Relu, GlobalAveragePool, Flatten."""
    node = helper.make_node
    nodes = [node("Dropout", ["features"], ["dropped"], name="/drop/Dropout"),
             node("Conv", ["dropped", "sq.weight", "sq.bias"], ["class_maps"], name="/classifier/Conv"),
             node("Relu", ["class_maps"], ["class_act"], name="/classifier/Relu"),
             node("GlobalAveragePool", ["class_act"], ["pooled"], name="/pool/GlobalAveragePool"),
             node("Flatten", ["pooled"], ["logits"], name="/Flatten")]
    return nodes, {}


@head_builder("mixed")
def _mixed(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """every other op of the set (BatchNormalization, depthwise/grouped/dilated Conv, AveragePool,
    overlapping padded MaxPool, SE-style Mul, Div, Sub, Concat, Clip, LeakyRelu, HardSigmoid, Tanh,
    ReduceMean (opset 13 axes), Transpose, batched MatMul, Squeeze/Unsqueeze, Identity, Gemm alpha/beta/transA)."""
    node, c = helper.make_node, CHANNELS
    nodes = [
        node("BatchNormalization", ["features", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"], name="/bn"),
        node("Conv", ["bn", "dw.weight"], ["dw"], name="/dw", group=c, strides=[2, 2], pads=[1, 1, 1, 1]),
        node("Conv", ["dw", "pw.weight", "pw.bias"], ["pw"], name="/pw"),
        node("Conv", ["pw", "gc.weight"], ["gc"], name="/gc", group=2, dilations=[2, 2], pads=[2, 2, 2, 2]),
        node("AveragePool", ["gc"], ["ap"], name="/ap", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("LeakyRelu", ["ap"], ["lr"], name="/lr", alpha=0.1),
        node("GlobalAveragePool", ["lr"], ["squeeze"], name="/se/pool"),
        node("Sigmoid", ["squeeze"], ["gate"], name="/se/gate"),
        node("Mul", ["lr", "gate"], ["excited"], name="/se/mul"),
        node("HardSigmoid", ["gc"], ["hs"], name="/hs"),
        node("Add", ["hs", "f_one"], ["denominator"], name="/add"),
        node("Div", ["excited", "denominator"], ["divided"], name="/div"),
        node("Clip", ["pw", "f_lo", "f_hi"], ["clipped"], name="/clip"),
        node("Tanh", ["clipped"], ["tanh"], name="/tanh"),
        node("Concat", ["divided", "tanh"], ["cat"], name="/cat", axis=1),
        node("Sub", ["cat", "shift"], ["shifted"], name="/sub"),
        node("MaxPool", ["shifted"], ["mp"], name="/mp", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        node("ReduceMean", ["mp"], ["rows"], name="/mean", axes=[3], keepdims=0),
        node("Transpose", ["rows"], ["tokens"], name="/tokens", perm=[0, 2, 1]),
        node("MatMul", ["tokens", "mm.weight"], ["queries"], name="/proj"),
        node("Transpose", ["queries"], ["keys"], name="/keys", perm=[0, 2, 1]),
        node("MatMul", ["queries", "keys"], ["scores"], name="/attention"),
        node("Unsqueeze", ["scores", "i64_one"], ["scores4"], name="/unsqueeze"),
        node("Squeeze", ["scores4", "i64_one"], ["scores3"], name="/squeeze"),
        node("Identity", ["scores3"], ["same"], name="/identity"),
        node("Flatten", ["same"], ["flat"], name="/Flatten"),
        node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["part1"], name="/fc1", transB=1, alpha=0.5, beta=2.0),
        node("Transpose", ["flat"], ["flat_t"], name="/flat_t", perm=[1, 0]),
        node("Gemm", ["flat_t", "fc2.weight"], ["part2"], name="/fc2", transA=1),
        node("Add", ["part1", "part2"], ["logits"], name="/logits")]
    return nodes, {}


@head_builder("nhwc", opset=18)
def _nhwc(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """opset 18: ReduceMean with input axes, MatMul + Add, GELU (Erf), Sigmoid, Reshape, MatMul."""
    node = helper.make_node
    nodes = [node("Transpose", ["features"], ["features_nhwc"], name="/to_nhwc", perm=[0, 2, 3, 1]),
             node("ReduceMean", ["features_nhwc", "i64_axes_hw"], ["pooled"], name="/pool", keepdims=0),
             node("MatMul", ["pooled", "nh1.matrix"], ["product"], name="/fc1/MatMul"),
             node("Add", ["product", "nh1.bias"], ["hidden"], name="/fc1/Add"),
             node("Div", ["hidden", "f_sqrt2"], ["scaled"], name="/gelu/Div"),
             node("Erf", ["scaled"], ["erf"], name="/gelu/Erf"),
             node("Add", ["erf", "f_one"], ["erf1"], name="/gelu/Add"),
             node("Mul", ["hidden", "erf1"], ["gelu2"], name="/gelu/Mul"),
             node("Mul", ["gelu2", "f_half"], ["gelu"], name="/gelu/Mul2"),
             node("Reshape", ["gelu", "nh.shape"], ["grid"], name="/grid"),
             node("MatMul", ["grid", "nh3.matrix"], ["mixed"], name="/mix"),
             node("Sigmoid", ["mixed"], ["gated"], name="/gate"),
             node("Reshape", ["gated", "nh.flat"], ["flat"], name="/flat"),
             node("MatMul", ["flat", "nh2.matrix"], ["logits"], name="/fc2/MatMul")]
    extra = {"nh.flat": np.array([-1, 16], np.int64)}
    return nodes, extra


@head_builder("gather")
def _gather(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """GlobalAveragePool, Flatten, Gather of channels along the last axis (2-D indices, repeated and
    negative), Flatten, Gemm."""
    node, k = helper.make_node, CLASSES
    nodes = [node("GlobalAveragePool", ["features"], ["pooled"], name="/pool/GlobalAveragePool"),
             node("Flatten", ["pooled"], ["flat"], name="/Flatten"),
             node("Gather", ["flat", "ga.index"], ["picked"], name="/pick/Gather", axis=-1),
             node("Flatten", ["picked"], ["picked_flat"], name="/Flatten_1"),
             node("Gemm", ["picked_flat", "ga.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1)]
    extra = {"ga.index": np.array([[0, 2], [2, -1], [4, -5]], np.int64), "ga.weight": r(k, 6)}
    return nodes, extra


@head_builder("strided", opset=18)
def _strided(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """opset 18, torch's dynamo exporter's ConvNeXt as_strided: ReduceMean, Reshape to [N·C] (its shape
    from Size(input)), Gather at indices n·C + c computed from Shape(input) and Shape(conv_out), Transpose,
    LayerNormalization, Transpose, Reshape, Gemm."""
    node, c = helper.make_node, CHANNELS
    nodes = [node("ReduceMean", ["features", "i64_axes_last2"], ["pooled"], name="/mean", keepdims=1),
             node("Size", ["input"], ["numel"], name="/numel"),
             node("Div", ["numel", "i64_pixels"], ["batch_from_size"], name="/numel/Div"),
             node("Shape", ["conv_out"], ["channels_1"], name="/channels", start=1, end=2),
             node("Squeeze", ["channels_1"], ["channels"], name="/channels/Squeeze"),
             node("Mul", ["batch_from_size", "channels"], ["flat_size"], name="/flat_size"),
             node("Unsqueeze", ["flat_size", "i64_zero"], ["flat_shape"], name="/flat_shape"),
             node("Reshape", ["pooled", "flat_shape"], ["flat"], name="/flat"),
             node("Shape", ["input"], ["batch_1"], name="/batch", start=0, end=1),
             node("Squeeze", ["batch_1"], ["batch"], name="/batch/Squeeze"),
             node("Range", ["i64_start", "batch", "i64_step"], ["rows"], name="/rows"),
             node("Mul", ["rows", "channels"], ["row_starts"], name="/row_starts"),
             node("Unsqueeze", ["row_starts", "i64_axes_123"], ["row_starts4"], name="/row_starts4"),
             node("Add", ["row_starts4", "i64_columns"], ["index"], name="/index"),
             node("Gather", ["flat", "index"], ["strided"], name="/as_strided", axis=0),
             node("Transpose", ["strided"], ["strided_last"], name="/norm/Transpose", perm=[0, 2, 3, 1]),
             node("LayerNormalization", ["strided_last", "ln.scale", "ln.bias"], ["normed_last"],
                  name="/norm/LayerNorm", axis=-1, epsilon=1e-6),
             node("Transpose", ["normed_last"], ["normed"], name="/norm/Transpose_1", perm=[0, 3, 1, 2]),
             node("Reshape", ["normed", "st.shape"], ["view"], name="/view"),
             node("Gemm", ["view", "fc.weight", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1)]
    extra = {"i64_axes_last2": np.array([-1, -2], np.int64), "i64_pixels": np.array(3 * SIZE * SIZE, np.int64),
             "i64_zero": np.array([0], np.int64), "i64_start": np.array(0, np.int64),
             "i64_step": np.array(1, np.int64), "i64_axes_123": np.array([1, 2, 3], np.int64),
             "i64_columns": np.arange(c, dtype=np.int64).reshape(1, c, 1, 1),
             "st.shape": np.array([-1, c], np.int64)}
    return nodes, extra


@head_builder("attention")
def _attention(r: Random, arrays: dict[str, np.ndarray]) -> Built:
    """EfficientFormer's and MobileViT's last blocks: Reshape to tokens, Transpose, MatMul to q, k, v
    and a fourth part left unused, Split, q·kᵀ, Mul, Softmax, MatMul with v, ReduceMean over the tokens, Gemm."""
    node, c, k = helper.make_node, CHANNELS, CLASSES
    nodes = [node("Reshape", ["features", "at.tokens"], ["tokens_cf"], name="/tokens"),
             node("Transpose", ["tokens_cf"], ["tokens"], name="/tokens/Transpose", perm=[0, 2, 1]),
             node("MatMul", ["tokens", "at.qkv"], ["qkv"], name="/qkv/MatMul"),
             node("Split", ["qkv", "at.split"], ["q", "k", "v", "unused"], name="/qkv/Split", axis=-1),
             node("Transpose", ["k"], ["k_t"], name="/k/Transpose", perm=[0, 2, 1]),
             node("MatMul", ["q", "k_t"], ["scores"], name="/scores/MatMul"),
             node("Mul", ["scores", "f_half"], ["scaled"], name="/scores/Mul"),
             node("Softmax", ["scaled"], ["weights"], name="/attention/Softmax", axis=-1),
             node("MatMul", ["weights", "v"], ["mixed"], name="/mixed/MatMul"),
             node("ReduceMean", ["mixed"], ["pooled"], name="/tokens/ReduceMean", axes=[1], keepdims=0),
             node("Gemm", ["pooled", "at.fc", "fc.bias"], ["logits"], name="/fc/Gemm", transB=1)]
    extra = {"at.tokens": np.array([0, c, SIZE * SIZE], np.int64), "at.qkv": r(c, 14, scale=0.5),
             "at.split": np.array([4, 4, 4, 2], np.int64), "at.fc": r(k, 4)}
    return nodes, extra


HEADS = tuple(HEAD_BUILDERS)


def write_head_classifier(path: str | Path, head: str, seed: int = 0, softmax: bool = False,
                         layout: str = "nchw") -> Path:
    """conv 3x3 -> relu = `features` [N, 5, 16, 16] (NHWC for head nhwc) -> the head `head` of
    HEAD_BUILDERS -> logits [-> softmax]."""
    rng = np.random.default_rng(seed)

    def r(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    c, k = CHANNELS, CLASSES
    arrays: dict[str, np.ndarray] = {
        "conv.weight": r(c, 3, 3, 3, scale=0.3), "conv.bias": r(c, scale=0.1),
        "i64_axes_hw": np.array([1, 2], np.int64), "i64_one": np.array([1], np.int64),
        "f_one": np.array(1.0, np.float32), "f_half": np.array(0.5, np.float32),
        "f_sqrt2": np.array(np.sqrt(2), np.float32), "f_lo": np.array(-0.5, np.float32),
        "f_hi": np.array(0.7, np.float32), "shift": r(12, 1, 1, scale=0.1),
        "bn.scale": r(c) + 1.5, "bn.bias": r(c), "bn.mean": r(c, scale=0.1), "bn.var": np.abs(r(c)) + 0.5,
        "dw.weight": r(c, 1, 3, 3, scale=0.5), "pw.weight": r(6, c, 1, 1, scale=0.5), "pw.bias": r(6),
        "gc.weight": r(6, 3, 3, 3, scale=0.3), "mm.weight": r(12, 8, scale=0.3),
        "fc1.weight": r(k, 16, scale=0.3), "fc1.bias": r(k), "fc2.weight": r(16, k, scale=0.3),
        "vgg1.weight": r(24, c * 8 * 8, scale=0.05), "vgg1.bias": r(24, scale=0.1),
        "vgg2.weight": r(24, 24, scale=0.3), "vgg2.bias": r(24, scale=0.1), "vgg3.weight": r(k, 24, scale=0.3),
        "mlp1.weight": r(16, c), "mlp1.bias": r(16, scale=0.1), "mlp2.weight": r(k, 16, scale=0.3),
        "ln.scale": r(c) + 1, "ln.bias": r(c), "fc.weight": r(k, c), "fc.bias": r(k),
        "se.weight": r(16, c, 1, 1), "se.bias": r(16, scale=0.1), "se_fc.weight": r(k, 16, scale=0.3),
        "sq.weight": r(k, c, 1, 1), "sq.bias": r(k, scale=0.1),
        "nh1.matrix": r(c, 16), "nh1.bias": r(16, scale=0.1), "nh2.matrix": r(16, k, scale=0.3),
        "nh.shape": np.array([-1, 4, 4], np.int64), "nh3.matrix": r(4, 4),
    }
    build, opset = HEAD_BUILDERS[head]
    node = helper.make_node
    nodes = [node("Transpose", ["input"], ["input_nchw"], perm=[0, 3, 1, 2])] if layout == "nhwc" else []
    nodes += [node("Conv", ["input_nchw" if nodes else "input", "conv.weight", "conv.bias"], ["conv_out"],
                  name="/conv/Conv", pads=[1, 1, 1, 1]),
             node("Relu", ["conv_out"], ["features"], name="/relu/Relu")]
    head_nodes, extra = build(r, arrays)
    nodes += head_nodes
    arrays |= extra
    output = "logits"
    if softmax:
        nodes.append(node("Softmax", ["logits"], ["probabilities_out"], name="/Softmax", axis=1))
        output = "probabilities_out"
    used = {name for n in nodes for name in n.input}
    graph = helper.make_graph(
        nodes, "classifier", [helper.make_tensor_value_info(
            "input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE] if layout == "nchw" else ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(value, name) for name, value in arrays.items() if name in used],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return Path(path)


def write_wide_vgg_classifier(path: str | Path, seed: int = 0, width: int = 1024, classes: int = 10) -> Path:
    """torchvision VGG's head, smaller: conv 3x3 -> relu = `features` [N, 64, 14, 14] -> MaxPool 2x2 ->
    AveragePool 1x1 (the adaptive 7x7 -> 7x7 pool; no float64 kernel in onnxruntime) -> Flatten ->
    Gemm 3136 -> `width` -> Relu -> Gemm -> Relu -> Gemm -> `classes` logits. Weights like torch's
    default init (uniform, ±1/sqrt(fan in)); the ReLU MLP is wide enough for float32 finite differences
    to be off by more than 1e-2."""
    rng = np.random.default_rng(seed)

    def linear(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
        bound = 1 / np.sqrt(columns)
        return (rng.uniform(-bound, bound, (rows, columns)).astype(np.float32),
               rng.uniform(-bound, bound, rows).astype(np.float32))

    channels, size = 64, 14
    arrays = {"conv.weight": rng.uniform(-0.2, 0.2, (channels, 3, 3, 3)).astype(np.float32),
             "conv.bias": rng.uniform(-0.2, 0.2, channels).astype(np.float32)}
    arrays["fc1.weight"], arrays["fc1.bias"] = linear(width, channels * 7 * 7)
    arrays["fc2.weight"], arrays["fc2.bias"] = linear(width, width)
    arrays["fc3.weight"], arrays["fc3.bias"] = linear(classes, width)
    node = helper.make_node
    nodes = [node("Conv", ["input", "conv.weight", "conv.bias"], ["conv_out"], name="/conv/Conv", pads=[1, 1, 1, 1]),
             node("Relu", ["conv_out"], ["features"], name="/relu/Relu"),
             node("MaxPool", ["features"], ["pool"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
             node("AveragePool", ["pool"], ["avg"], name="/avgpool/AveragePool", kernel_shape=[1, 1], strides=[1, 1]),
             node("Flatten", ["avg"], ["flat"], name="/Flatten"),
             node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["fc1"], name="/fc1/Gemm", transB=1),
             node("Relu", ["fc1"], ["act1"], name="/act1/Relu"),
             node("Gemm", ["act1", "fc2.weight", "fc2.bias"], ["fc2"], name="/fc2/Gemm", transB=1),
             node("Relu", ["fc2"], ["act2"], name="/act2/Relu"),
             node("Gemm", ["act2", "fc3.weight", "fc3.bias"], ["logits"], name="/fc3/Gemm", transB=1)]
    graph = helper.make_graph(
        nodes, "classifier", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(value, name) for name, value in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return Path(path)

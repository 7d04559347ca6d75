"""Small ONNX classifiers written with onnx.helper, shaped like torch.onnx.export's output, for the
ONNX import's tests (no framework)."""

from __future__ import annotations

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

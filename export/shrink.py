"""Make the gradient graph reuse the forward pass's weights instead of storing its own copies.

tf2onnx folds each BatchNorm into the preceding Conv's weights (W' = s * W per output
channel) but the backward ConvTranspose keeps the raw W, and a Dense layer's forward and
backward products each get their own layout of the kernel (W and Wᵀ). For a deep target layer that stores the head's
weights twice (ResNet50 at conv4_block6_out: 162 MiB against 97 MiB for the classifier).
Here the backward ops are rewritten onto the forward initializers:
  ConvTranspose(x, W)  ->  ConvTranspose(x * (1 / s), W')      (per input channel of x)
  MatMul(g, Wᵀ) or Gemm(g, Wᵀ, transB=t) -> Gemm(g, W, transB=1-t)   (g of rank 2)
The self-check runs after this pass, so the rewrite is checked like the rest of the graph.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper


def share_forward_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite backward ops onto forward weights and drop the initializers no longer used."""
    graph = model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input)
    convolutions = [node.input[1] for node in graph.node if node.op_type == "Conv" and node.input[1] in arrays]
    twins = _transposed_twins(graph, arrays, uses)
    ranks = _ranks(model)
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "ConvTranspose" and node.input[1] in arrays:
            nodes.extend(_share_conv_transpose(node, arrays, convolutions, graph))
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in twins and ranks.get(node.input[0]) == 2:
            nodes.append(_use_twin(node, twins[node.input[1]]))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def _transposed_twins(graph, arrays, uses) -> dict[str, str]:
    """For 2-D product weights stored both as W and as Wᵀ: the less used name -> the more used."""
    matrices = {node.input[1] for node in graph.node
                if node.op_type in ("MatMul", "Gemm") and node.input[1] in arrays and arrays[node.input[1]].ndim == 2}
    twins = {}
    for a in matrices:
        for b in matrices:
            if a < b and arrays[a].shape == arrays[b].shape[::-1] and np.array_equal(arrays[a].T, arrays[b]):
                keep, drop = (a, b) if uses[a] >= uses[b] else (b, a)
                twins[drop] = keep
    return twins


def _use_twin(node: onnx.NodeProto, twin: str) -> onnx.NodeProto:
    """The same product computed with the transposed twin of its B input."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attributes["transB"] = 1 - attributes.get("transB", 0)
    inputs = [node.input[0], twin, *node.input[2:]]
    return helper.make_node("Gemm", inputs, list(node.output), name=node.name, **attributes)


def _channel_scale(forward: np.ndarray, backward: np.ndarray) -> np.ndarray | None:
    """s with forward == s[:, None, ...] * backward (per leading channel), or None."""
    if forward.shape != backward.shape or forward.dtype != backward.dtype:
        return None
    axes = tuple(range(1, backward.ndim))
    norm = np.sum(backward.astype(np.float64) ** 2, axis=axes)
    if np.any(norm == 0):
        return None
    scale = np.sum(forward.astype(np.float64) * backward, axis=axes) / norm
    if np.any(np.abs(scale) < 1e-12):
        return None
    shape = (-1,) + (1,) * (backward.ndim - 1)
    tolerance = 1e-5 * float(np.max(np.abs(forward)))
    if not np.allclose(forward, scale.reshape(shape) * backward, rtol=1e-5, atol=tolerance):
        return None
    return scale


def _share_conv_transpose(node, arrays, convolutions, graph) -> list[onnx.NodeProto]:
    backward = arrays[node.input[1]]
    for name in convolutions:
        scale = _channel_scale(arrays[name], backward)
        if scale is None:
            continue
        shared = onnx.NodeProto()
        shared.CopyFrom(node)
        shared.input[1] = name
        if np.all(scale == 1.0):
            return [shared]
        inverse = (1.0 / scale).astype(backward.dtype).reshape(1, -1, 1, 1)
        inverse_name = f"{node.name}/inverse_channel_scale"
        graph.initializer.append(numpy_helper.from_array(inverse, inverse_name))
        scaled = f"{node.input[0]}/scaled_for_{node.name}"
        shared.input[0] = scaled
        return [helper.make_node("Mul", [node.input[0], inverse_name], [scaled], name=f"{node.name}/scale"), shared]
    return [node]


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Known ranks of the graph's tensors, from ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {
        value.name: len(value.type.tensor_type.shape.dim)
        for value in values
        if value.type.tensor_type.HasField("shape")
    }

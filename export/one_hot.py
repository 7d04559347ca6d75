"""Turn products with the one-hot gradient seed into row lookups.

The backward pass starts with d score / d features = one_hot(class) @ Wᵀ: a product that reads
the whole classifier matrix (8 MiB for ResNet50's 2048 x 1000) to pick one row per explained
class. On the CPU that product cost as much as the forward Dense layer (0.3 ms of ResNet50's
~1 ms Grad-CAM overhead at batch 1). Rewritten here:
  MatMul(OneHot(i, depth, [0, 1]), B)  ->  Gather(B, i, axis=0)      (B an initializer [depth, n])
An index outside 0..depth-1 is then an error instead of a zero gradient; the runtime checks
class indices before it runs the model. The self-check runs after this pass.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def gather_one_hot_products(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each product of a 0/1 OneHot (last axis) with a constant matrix by a Gather."""
    graph = model.graph
    arrays = {init.name: init for init in graph.initializer}
    one_hots = {node.output[0]: node for node in graph.node if _is_plain_one_hot(node, arrays)}
    nodes = []
    for node in graph.node:
        one_hot = one_hots.get(node.input[0]) if node.op_type in ("MatMul", "Gemm") else None
        if one_hot is not None and _is_plain_product(node, arrays, _depth(one_hot, arrays)):
            nodes.append(helper.make_node("Gather", [node.input[1], one_hot.input[0]], list(node.output),
                                          name=f"{node.name}/as_gather", axis=0))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _is_plain_one_hot(node: onnx.NodeProto, arrays: dict) -> bool:
    """OneHot over the last axis with constant depth and values (off 0, on 1)."""
    if node.op_type != "OneHot" or node.input[1] not in arrays or node.input[2] not in arrays:
        return False
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
    values = numpy_helper.to_array(arrays[node.input[2]])
    return axis == -1 and values.tolist() == [0, 1]


def _depth(node: onnx.NodeProto, arrays: dict) -> int:
    return int(np.asarray(numpy_helper.to_array(arrays[node.input[1]])).reshape(-1)[0])


def _is_plain_product(node: onnx.NodeProto, arrays: dict, depth: int) -> bool:
    """A [*, depth] @ [depth, n] product with a constant right side and nothing else (Gemm:
    no transposes, no C, alpha 1)."""
    if node.input[1] not in arrays:
        return False
    shape = tuple(arrays[node.input[1]].dims)
    if len(shape) != 2 or shape[0] != depth:
        return False
    if node.op_type == "MatMul":
        return True
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    plain = attributes.get("transA", 0) == 0 and attributes.get("transB", 0) == 0
    return plain and attributes.get("alpha", 1.0) == 1.0 and len(node.input) == 2

"""The gradients of a general head: the head recomputed on K copies of the batch (row k·N + n is
image n, target k), seeded with the one-hot of each explained class and differentiated by autodiff."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from export import contract
from export.onnx_import.autodiff import Emitter, backward
from export.onnx_import.graph import Classifier
from export.onnx_import.head import GeneralHead

PREFIX = "onnxcam/head/"


def general_gradients(classifier: Classifier, head: GeneralHead) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes computing `gradients` and `pooled_gradients` from the forward graph's tensors, the
    explained classes and `onnxcam/k` (K as a 1-element int64 tensor)."""
    opset = next(o.version for o in classifier.model.opset_import if o.domain in ("", "ai.onnx"))
    renamed = {name: PREFIX + name for name in (head.target, *head.batched)}
    renamed.update({name: PREFIX + name for node in (*head.sizes, *head.nodes) for name in node.output if name})
    shapes = dict(head.shapes) | {new: head.shapes[old] for old, new in renamed.items() if old in head.shapes}
    e = Emitter(PREFIX + "grad/", opset, shapes, head.constants)
    k = "onnxcam/k"
    for name in (head.target, *head.batched):  # K copies, stacked along the batch axis
        repeats = e.op("Concat", k, e.const([1] * (len(head.shapes[name]) - 1), np.int64), axis=0)
        e.nodes.append(helper.make_node("Tile", [name, repeats], [renamed[name]], name=renamed[name]))
    for node in head.sizes:  # recomputed for a batch K times larger
        copy = _renamed(node, renamed)
        factor = _batch_factor(e, node, k) if node.op_type in ("Shape", "Size") else None
        if factor is None:
            e.nodes.append(copy)
            continue
        output = copy.output[0]
        copy.output[0] = output + "_for_n"
        e.nodes += [copy, helper.make_node("Mul", [copy.output[0], factor], [output], name=output)]
    copies = [_renamed(node, renamed) for node in head.nodes]
    origin = {copy.name: node.name or node.output[0] for copy, node in zip(copies, head.nodes)}
    e.nodes.extend(copies)
    classes = e.op("Reshape", e.op("Transpose", contract.OUTPUT_EXPLAINED_CLASS, perm=[1, 0]),
                   e.const([-1], np.int64))
    seed = e.op("OneHot", classes, e.const(classifier.classes, np.int64), e.const([0.0, 1.0]), axis=-1)
    floats = set(head.floats) | set(renamed.values())
    gradient = backward(copies, renamed[head.target], renamed[classifier.logits], seed, e, floats, origin)
    stacked = e.op("Reshape", gradient, e.op("Concat", k, e.const([-1, *head.shapes[head.target][1:]], np.int64),
                                             axis=0))
    perm = [1, 0, 3, 4, 2] if head.target_layout == "nchw" else [1, 0, 2, 3, 4]
    e.nodes.append(helper.make_node("Transpose", [stacked], [contract.OUTPUT_GRADIENTS], perm=perm,
                                    name=PREFIX + "gradients"))
    h, w = head.map_size
    summed = e.reduce_sum(contract.OUTPUT_GRADIENTS, [2, 3], keepdims=0)
    e.nodes.append(helper.make_node("Mul", [summed, e.const(1 / (h * w))], [contract.OUTPUT_POOLED_GRADIENTS],
                                    name=PREFIX + "pooled_gradients"))
    return e.nodes, e.initializers


def _renamed(node: onnx.NodeProto, renamed: dict[str, str]) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = PREFIX + (node.name or node.output[0])
    copy.input[:] = [renamed.get(name, name) for name in node.input]
    copy.output[:] = [renamed.get(name, name) for name in node.output]
    return copy


def _batch_factor(e: Emitter, node: onnx.NodeProto, k: str) -> str | None:
    """What multiplies the output of Shape or Size `node` for a batch K times larger; None: nothing."""
    if node.op_type == "Size":
        return e.op("Reshape", k, e.const([], np.int64))
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    dims = range(len(e.shape(node.input[0])))[values.get("start", 0):values.get("end")]
    return e.op("Concat", k, e.const([1] * (len(dims) - 1), np.int64), axis=0) if 0 in dims else None

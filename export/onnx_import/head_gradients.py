"""The gradients of a general head on K copies of the batch (row k·N + n is image n, target k), seeded
with the one-hot of each explained class and differentiated by autodiff."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .. import contract
from .autodiff import backward
from .emitter import Emitter
from .graph import Classifier
from .head import GeneralHead

PREFIX = "onnxcam/head/"


def general_gradients(classifier: Classifier, head: GeneralHead) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes computing `gradients` and `pooled_gradients` from the forward graph's tensors, the
    explained classes and `onnxcam/k` (K as a 1-element int64 tensor).

    The K copies of a batch-first float tensor of the head (a dynamic first axis; not attention's
    [3, N, heads, T, d] nor a scalar from a shape) are its forward value tiled K times, not recomputed
    (VGG's head would read its 400 MB first layer again); only the integers computed from the batch size
    are recomputed. Where the logits come from a linear layer with constant weights, the backward pass
    starts at its input with the explained classes' rows of the weights (the one-hot seed times the
    matrix, without reading the matrix)."""
    opset = next(o.version for o in classifier.model.opset_import if o.domain in ("", "ai.onnx"))
    renamed = {name: PREFIX + name for name in (head.target, *head.batched)}
    renamed.update({name: PREFIX + name for node in (*head.sizes, *head.nodes) for name in node.output if name})
    shapes = dict(head.shapes) | {new: head.shapes[old] for old, new in renamed.items() if old in head.shapes}
    e = Emitter(PREFIX + "grad/", opset, shapes, head.constants)
    k = "onnxcam/k"
    forward = []  # the integers recomputed for a batch K times larger, and float tensors that cannot be tiled
    for node in head.sizes:
        copy = _renamed(node, renamed)
        factor = _batch_factor(e, node, k) if node.op_type in ("Shape", "Size") else None
        if factor is None:
            forward.append(copy)
            continue
        output = copy.output[0]
        copy.output[0] = output + "_for_n"
        forward += [copy, helper.make_node("Mul", [copy.output[0], factor], [output], name=output)]
    copies = [_renamed(node, renamed) for node in head.nodes]
    origin = {copy.name: node.name or node.output[0] for copy, node in zip(copies, head.nodes)}
    tileable = {renamed[name]: name for name in (head.target, *head.batched)}
    for node, copy in zip(head.nodes, copies):
        outputs = [name for name in node.output if name]
        if all(name in head.floats and head.shapes.get(name) and head.shapes[name][0] is None for name in outputs):
            tileable.update({renamed[name]: name for name in outputs})
        else:
            forward.append(copy)
    seed_at, seed, differentiated = _seed(e, classifier, head, copies, renamed)
    floats = set(head.floats) | {new for old, new in renamed.items() if old in head.floats}
    backward_start = len(e.nodes)
    gradient = backward(differentiated, renamed[head.target], seed_at, seed, e, floats, origin)
    backward_nodes = e.nodes[backward_start:]
    del e.nodes[backward_start:]
    read = {name for node in (*forward, *backward_nodes) for name in node.input}
    for new, old in tileable.items():  # K copies, stacked along the batch axis
        if new in read:
            repeats = e.op("Concat", k, e.const([1] * (len(head.shapes[old]) - 1), np.int64), axis=0)
            e.nodes.append(helper.make_node("Tile", [old, repeats], [new], name=new))
    e.nodes += forward + backward_nodes
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


def _seed(e: Emitter, classifier: Classifier, head: GeneralHead, copies: list[onnx.NodeProto],
          renamed: dict[str, str]) -> tuple[str, str, list[onnx.NodeProto]]:
    """(where the backward pass starts, d score / d there, the nodes to differentiate), rows in the order
    k·N + n. At the logits, the one-hot of the explained classes; at the input of a final linear layer
    (Gemm, or MatMul with an optional Add, constant weights), those classes' rows of its weights."""
    classes = e.op("Reshape", e.op("Transpose", contract.OUTPUT_EXPLAINED_CLASS, perm=[1, 0]),
                   e.const([-1], np.int64))
    made_by = {name: node for node in copies for name in node.output}
    copied = set(renamed.values())
    fixed = lambda name: name not in copied  # not computed from the image: a weight
    last = made_by[renamed[classifier.logits]]
    if last.op_type == "Add" and len(last.input) == 2 and fixed(last.input[1]):
        last = made_by.get(last.input[0], last)
    a = {attribute.name: helper.get_attribute_value(attribute) for attribute in last.attribute}
    linear = (last.op_type in ("Gemm", "MatMul") and fixed(last.input[1])
              and len(head.shapes.get(last.input[1]) or []) == 2 and not a.get("transA", 0)
              and last.input[0] in made_by)
    if not linear:
        seed = e.op("OneHot", classes, e.const(classifier.classes, np.int64), e.const([0.0, 1.0]), axis=-1)
        return renamed[classifier.logits], seed, copies
    by_classes = bool(a.get("transB", 0))  # weights [classes, C]; else [C, classes]
    rows = e.op("Gather", last.input[1], classes, axis=0 if by_classes else 1)
    if not by_classes:
        rows = e.op("Transpose", rows, perm=[1, 0])
    seed = e.op("Mul", rows, e.const(float(a.get("alpha", 1.0))))
    return last.input[0], seed, copies[:copies.index(last)]


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

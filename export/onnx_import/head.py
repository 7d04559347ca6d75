"""Choose the head to differentiate: the closed-form GAP + linear head when it applies, else the
subgraph from the target tensor to the logits, differentiated by `autodiff.py`.

`--layer auto`: walking back from the logits along each node's first image-dependent input, the first
4-D tensor with h·w > 1 that is neither a MaxPool/AveragePool output nor a class score map (as many
channels as classes, SqueezeNet-style): the tensor the pooling and the classifier read. Nothing
downstream of a global pooling (GlobalAveragePool/GlobalMaxPool, ReduceMean/ReduceMax over both spatial
axes, a MaxPool/AveragePool with a 1x1 output) is a candidate: where the path has one, the walk starts
from the input of the last one (a pooled vector transposed to 1x768x1, ConvNeXt-style, is not a map).
Its layout is NHWC when the head reads it with ReduceMean over axes 1, 2 or a Transpose(0, 3, 1, 2),
else NCHW. A Swin (the last attention reads a 4-D NHWC map through a window partition only): that map,
the last block's norm1 (`tokens.windowed_layer`), even where the closed-form head would apply."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError
from .graph import Classifier, Head, LinearHead, _shapes, linear_head, producers
from .tokens import SUFFIX, add_patch_grid, patch_grid, select_tokens_early, transformer_layer, windowed_layer

POOLS = ("MaxPool", "AveragePool")
SMALL_CONSTANT = 4096


@dataclass(frozen=True)
class GeneralHead(Head):
    """target -> any differentiable subgraph -> logits."""

    nodes: tuple[onnx.NodeProto, ...]  # from the target to the logits, in graph order
    batched: tuple[str, ...]  # image-dependent float tensors from outside the head that it reads
    sizes: tuple[onnx.NodeProto, ...]  # computing the integers it reads from the batch size (Shape, Size), in order
    shapes: dict  # static shapes of the head's tensors and constants
    constants: dict  # values of the small initializers and Constant nodes (`_constants`)
    floats: frozenset  # the float tensors of the graph


def find_head(classifier: Classifier, layer: str) -> LinearHead | GeneralHead:
    """The exact GAP + linear head where it applies to `layer`, else the general head."""
    try:
        head = linear_head(classifier)
    except ExportError:
        return general_head(classifier, layer)
    if layer == "auto" and any(node.op_type == "Softmax" for node in classifier.model.graph.node) \
            and _swin_layer(classifier) is not None:  # its last attention's input, not the pooled map
        return general_head(classifier, layer)
    return head if layer in ("auto", head.target) else general_head(classifier, layer)


def _swin_layer(classifier: Classifier) -> str | None:
    """The NHWC map that the last windowed attention reads (tokens.windowed_layer), else None."""
    model = classifier.model
    shapes, floats = _shapes(model), _float_tensors(model)
    dependent = _image_dependent(model.graph, classifier.input_name)
    path = [tensor for _, tensor in _walk_back(classifier, shapes, floats, dependent)]
    return windowed_layer(model.graph, path, shapes, dependent, floats)


def general_head(classifier: Classifier, layer: str) -> GeneralHead:
    model = classifier.model
    shapes = _shapes(model)
    floats = _float_tensors(model)
    dependent = _image_dependent(model.graph, classifier.input_name)
    target = _auto_target(classifier, shapes, floats, dependent) if layer == "auto" else layer.removesuffix(SUFFIX)
    if target not in shapes and target not in producers(model.graph):
        raise ExportError(f"--layer {layer}: no such tensor in the graph")
    shape, layout = shapes.get(target), None
    if target in floats and target in dependent and shape and len(shape) == 3:  # tokens: their patch grid
        target = add_patch_grid(model, patch_grid(model.graph, target, shapes, classifier.input_size))
        select_tokens_early(model, _shapes(model), _image_dependent(model.graph, classifier.input_name))
        shapes, floats = _shapes(model), _float_tensors(model)
        dependent = _image_dependent(model.graph, classifier.input_name)
        shape, layout = shapes[target], "nhwc"
    if target not in floats or target not in dependent or not shape or len(shape) != 4:
        raise ExportError(f"--layer {layer}: tensor {target} is neither a 4-D float feature map nor tokens "
                          f"[N, T, C] (shape {shape})")
    nodes = between(model.graph, target, classifier.logits)
    if not nodes:
        raise ExportError(f"--layer {layer}: the logits do not depend on tensor {target}")
    layout = layout or _layout(nodes, target, _constants(model), shape, classifier.input_size)
    h, w, channels = (shape[2], shape[3], shape[1]) if layout == "nchw" else tuple(shape[1:4])
    if None in (h, w, channels) or h * w <= 1:
        raise ExportError(f"tensor {target} is {h}x{w}: no spatial tensor to explain")
    made = {name for node in nodes for name in node.output}
    read = dict.fromkeys(name for node in nodes for name in node.input)
    batched = tuple(name for name in read if name and name != target and name not in made
                    and name in dependent and name in floats)
    indexing = [name for name in read if name and name not in made and name in dependent and name not in floats]
    sizes = _size_nodes(model.graph, indexing, dependent, floats)
    return GeneralHead(target, layout, (h, w), channels, tuple(nodes), batched, sizes, shapes, _constants(model),
                       frozenset(floats))


def _size_nodes(graph: onnx.GraphProto, names: list[str], dependent: set[str], floats: set[str]
                ) -> tuple[onnx.NodeProto, ...]:
    """The nodes computing image-dependent integer tensors `names` (ConvNeXt's as_strided Gather
    indices from the dynamo exporter) back to the Shape or Size nodes they come from, in graph order.
    ExportError when one comes from the image's values instead."""
    made_by = producers(graph)
    needed, wanted = set(), list(names)
    while wanted:
        node = made_by[wanted.pop()]
        if id(node) in needed:
            continue
        needed.add(id(node))
        if node.op_type in ("Shape", "Size"):
            continue
        read = [name for name in node.input if name in dependent]
        if any(name in floats for name in read):
            raise ExportError(f"unsupported head input: node {node.name or node.output[0]} computes integers "
                              "from the image's values, not from its shape")
        wanted.extend(read)
    return tuple(node for node in graph.node if id(node) in needed)


def between(graph: onnx.GraphProto, source: str, sink: str) -> list[onnx.NodeProto]:
    """The nodes on a path from tensor `source` to tensor `sink`, in graph order."""
    after = {source}
    downstream = []
    for node in graph.node:
        if any(name in after for name in node.input):
            after.update(node.output)
            downstream.append(node)
    needed, kept = {sink}, []
    for node in reversed(downstream):
        if any(name in needed for name in node.output):
            needed.update(node.input)
            kept.append(node)
    return kept[::-1]


def head_inputs(classifier: Classifier, head: Head) -> list[str]:
    """The head's inputs as `head_model` has them: the target, then every other tensor it reads from
    outside (initializers aside)."""
    return _head_parts(classifier, head)[1]


def _head_parts(classifier: Classifier, head: Head) -> tuple[list[onnx.NodeProto], list[str], dict, dict]:
    model = classifier.model
    nodes = between(model.graph, head.target, classifier.logits)
    made = {name for node in nodes for name in node.output}
    constants = {init.name: init for init in model.graph.initializer}
    read = dict.fromkeys(name for node in nodes for name in node.input if name)
    inputs = [head.target] + [name for name in read if name not in made and name not in constants
                              and name != head.target]
    return nodes, inputs, read, constants


def head_model(classifier: Classifier, head: Head) -> tuple[onnx.ModelProto, list[str]]:
    """The head alone as a model: inputs the target then every other tensor it reads from outside
    (initializers aside); output the logits. Returns (model, input names)."""
    model = classifier.model
    nodes, inputs, read, constants = _head_parts(classifier, head)
    types = elem_types(model)
    graph = helper.make_graph(
        nodes, "head",
        [helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None) for name in inputs],
        [helper.make_tensor_value_info(classifier.logits, TensorProto.FLOAT, None)],
        initializer=[constants[name] for name in read if name in constants],
    )
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version), inputs


def _walk_back(classifier: Classifier, shapes: dict, floats: set[str], dependent: set[str]
               ) -> list[tuple[onnx.NodeProto, str]]:
    """(node, the tensor it reads) from the logits back along each node's first image-dependent input,
    from the global pooling on where there is one."""
    made_by = producers(classifier.model.graph)
    constants = _constants(classifier.model)
    path = []
    tensor = classifier.logits
    while (node := made_by.get(tensor)) is not None:
        following = [name for name in node.input if name in dependent and name in floats]
        if not following:
            break
        tensor = following[0]
        path.append((node, tensor))
    pooling = next((i for i, (node, _) in enumerate(path) if _global_pooling(node, shapes, constants)), None)
    return path[pooling or 0:]


def _auto_target(classifier: Classifier, shapes: dict, floats: set[str], dependent: set[str]) -> str:
    made_by = producers(classifier.model.graph)
    constants = _constants(classifier.model)
    path = _walk_back(classifier, shapes, floats, dependent)
    tokens = transformer_layer(classifier.model.graph, [tensor for _, tensor in path], shapes, dependent, floats)
    if tokens is not None:
        return tokens
    for node, tensor in path:
        shape = shapes.get(tensor) or []
        if len(shape) != 4 or None in shape[1:] or tensor not in made_by or made_by[tensor].op_type in POOLS:
            continue
        nchw = _layout([node], tensor, constants) == "nchw"
        channels, area = (shape[1], shape[2] * shape[3]) if nchw else (shape[3], shape[1] * shape[2])
        if area > 1 and channels != classifier.classes:
            return tensor
    raise ExportError("no 4-D tensor with h·w > 1 between the input and the logits: "
                      "nothing spatial to explain; give one with --layer")


def _global_pooling(node: onnx.NodeProto, shapes: dict, constants: dict) -> bool:
    """Whether `node` pools a 4-D map over both spatial axes (either layout) to one value per channel."""
    if node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return True
    if node.op_type in POOLS:
        shape = shapes.get(node.output[0]) or []
        return len(shape) == 4 and list(shape[2:]) == [1, 1]
    if node.op_type in ("ReduceMean", "ReduceMax") and len(shapes.get(node.input[0]) or []) == 4:
        values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = values.get("axes", constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None)
        return axes is not None and sorted(int(a) % 4 for a in np.ravel(axes)) in ([1, 2], [2, 3])
    return False


def _layout(nodes: list[onnx.NodeProto], target: str, constants: dict, shape: list | None = None,
            input_size: tuple[int, int] | None = None) -> str:
    """NHWC where the head reads `target` as NHWC (Transpose to NCHW, a mean over axes 1, 2, a LayerNorm of
    the last axis), or where only [N, h, w, C] has the input's proportions (Swin's stages, read by
    strided Slices); else NCHW."""
    for node in nodes:
        if target not in node.input:
            continue
        values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Transpose" and list(values.get("perm", [])) == [0, 3, 1, 2]:
            return "nhwc"
        axes = values.get("axes", constants.get(node.input[-1], []) if len(node.input) > 1 else [])
        if node.op_type == "ReduceMean" and sorted(int(a) % 4 for a in np.ravel(axes)) == [1, 2]:
            return "nhwc"
        if node.op_type == "LayerNormalization" and int(values.get("axis", -1)) % 4 == 3:
            return "nhwc"
    if shape and input_size and len(shape) == 4 and None not in shape[1:]:
        height, width = input_size
        if shape[1] * width == shape[2] * height and shape[2] * width != shape[3] * height:
            return "nhwc"
    return "nchw"


def _image_dependent(graph: onnx.GraphProto, image: str) -> set[str]:
    dependent = {image}
    for node in graph.node:
        if any(name in dependent for name in node.input):
            dependent.update(node.output)
    return dependent


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    values = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    return {value.name: value.type.tensor_type.elem_type for value in values} | {
        init.name: init.data_type for init in model.graph.initializer}


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    return {name for name, kind in elem_types(model).items() if kind == TensorProto.FLOAT}


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The values of the small constants (initializers and Constant nodes up to SMALL_CONSTANT elements:
    axes, shapes, indices, scalars): what the walk and the vector-Jacobian products read. Weights stay
    in the graph (VGG's would cost 0.5 GB as arrays)."""
    tensors = [(init.name, init) for init in model.graph.initializer]
    tensors += [(node.output[0], node.attribute[0].t) for node in model.graph.node
                if node.op_type == "Constant" and node.attribute[0].name == "value"]
    return {name: numpy_helper.to_array(tensor) for name, tensor in tensors
            if int(np.prod(tensor.dims, dtype=np.int64)) <= SMALL_CONSTANT}

"""Read an ONNX classifier: its image input, its logits, the target tensor and the linear head.

The head recognised is what CNN classifiers end with: global average pooling of a 4-D tensor
(GlobalAveragePool, or ReduceMean over the two spatial axes), optional Flatten/Reshape/Squeeze/
Dropout/Identity, then one linear layer (Gemm, or MatMul with an optional Add of a bias), then an
optional Softmax. Its gradient is exact and needs no backward graph: d logit_c / d T = row c / (h·w).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ExportError
from .names import PREFIX, rename_reserved
from .shapes import batch_hint, prepared

PASS_THROUGH = ("Flatten", "Reshape", "Squeeze", "Dropout", "Identity")
SQUASHES = {"Softmax": "softmax", "Sigmoid": "sigmoid"}  # a trailing op making probabilities of the logits
BINARY_LOGITS = PREFIX + "binary_logits"
MAX_FIXED_BATCH = 64  # the self-check runs a model exported for a fixed batch on that many images at once


@dataclass(frozen=True)
class Classifier:
    """What the import needs to know about the input model."""

    model: onnx.ModelProto
    input_name: str
    layout: str  # nchw | nhwc: of the model's image input
    input_size: tuple[int, int]
    logits: str  # the pre-softmax (pre-sigmoid) tensor of `model`, [N, classes]
    squashed: bool  # the model ends in its Softmax or Sigmoid (dropped: the wrapper makes the probabilities)
    classes: int
    fixed_batch: int | None  # the input model's batch size where it is fixed (`model` takes any)
    original: onnx.ModelProto  # the input model as given (reserved names renamed): the self-check's reference
    activation: str  # softmax over the classes, or sigmoid: one probability per class
    scores: str  # `original`'s logits: `logits`, or for a binary sigmoid z where `logits` is (-z, z)
    user_names: dict[str, str]  # {renamed tensor: the user's name} (`names.py`)

    @property
    def binary(self) -> bool:
        """One sigmoid unit z, explained as two classes with logits (-z, z), as the Keras path does."""
        return self.logits == BINARY_LOGITS


@dataclass(frozen=True)
class Head:
    """The explained tensor, whatever lies between it and the logits."""

    target: str
    target_layout: str  # nchw | nhwc
    map_size: tuple[int, int]  # (h, w)
    channels: int


@dataclass(frozen=True)
class LinearHead(Head):
    """target -> global average pool -> linear layer -> logits."""

    weight: str  # the initializer holding the linear layer's matrix
    weight_is_classes_by_channels: bool  # True: [classes, C] (Gemm transB=1); False: [C, classes]
    scale: float  # the layer's alpha / (h·w)


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output}


def initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in graph.initializer}


def read_classifier(model: onnx.ModelProto, layout: str, input_size: tuple[int, int] | None) -> Classifier:
    """Check that `model` is a one-image-input, one-output classifier; ExportError if not."""
    graph = model.graph
    user_names = rename_reserved(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ExportError(f"the model uses opset {opset}; re-export it with opset 13 or later")
    unknown = next((node for node in graph.node if node.domain in ("", "ai.onnx")
                    and not onnx.defs.has(node.op_type, node.domain)), None)
    if unknown is not None:  # e.g. Erfc, which tf2onnx 1.17 leaves in a Keras GELU: no shape, no kernel
        raise ExportError(f"op {unknown.op_type} (node {unknown.name or unknown.output[0]}) is not an ONNX op: "
                          "the converter left it unconverted, and onnxruntime cannot run the model either")
    valueless = next((node for node in graph.node if node.op_type == "Constant" and len(node.attribute) != 1), None)
    if valueless is not None:
        raise ExportError(f"node {valueless.name or valueless.output[0]}: a Constant with "
                          f"{len(valueless.attribute)} attributes instead of one value: not a valid ONNX model")
    constants = initializers(graph)
    inputs = [value for value in graph.input if value.name not in constants]
    if len(inputs) != 1:
        names = ", ".join(value.name for value in inputs)
        raise ExportError(f"the model has {len(inputs)} inputs ({names}); an image classifier has one image input")
    if len(graph.output) != 1:
        raise ExportError(f"the model has {len(graph.output)} outputs; a classifier has one (logits or probabilities)")
    image = inputs[0]
    if image.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ExportError(f"input {image.name}: not float32; export the classifier with a float32 image input")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ExportError(f"input {image.name}: {len(dims)}-D; an image input is 4-D (NCHW or NHWC)")
    layout = _layout(dims, layout, image.name)
    spatial = dims[2:4] if layout == "nchw" else dims[1:3]
    if input_size is None:
        if None in spatial:
            raise ExportError(f"input {image.name}: its height and width are dynamic; give --input-size H,W")
        input_size = (int(spatial[0]), int(spatial[1]))
    elif None not in spatial and tuple(spatial) != tuple(input_size):
        raise ExportError(f"--input-size {input_size[0]},{input_size[1]}: the model's input is fixed at "
                          f"{spatial[0]}x{spatial[1]}")
    batch = dims[0]
    if batch is not None and batch > MAX_FIXED_BATCH:
        raise ExportError(f"input {image.name}: the self-check runs the original at its own batch size, "
                          f"at most {MAX_FIXED_BATCH}{batch_hint(batch)}")
    original, model = model, prepared(model, image.name, layout, input_size)
    output = model.graph.output[0].name
    node = producers(model.graph).get(output)
    squash = SQUASHES.get(node.op_type) if node is not None else None
    logits = node.input[0] if squash else output
    classes = _last_dim(model, logits)
    if classes == 1 and squash == "sigmoid":
        _append_binary_logits(model.graph, logits)
        return Classifier(model, image.name, layout, input_size, BINARY_LOGITS, True, 2, batch, original,
                          "sigmoid", logits, user_names)
    if classes == 1:
        raise ExportError(f"output {output}: 1 unit and no sigmoid; a binary classifier ends in a Sigmoid of "
                          "one unit or a Softmax over two (a regression is not a classifier)")
    if classes is None or classes < 2:
        raise ExportError(f"output {output}: not a classifier's output [N, classes] (shape {_shape(model, logits)})")
    return Classifier(model, image.name, layout, input_size, logits, squash is not None, classes, batch, original,
                      squash or "softmax", logits, user_names)


def _append_binary_logits(graph: onnx.GraphProto, z: str) -> None:
    """logits (-z, z) of one sigmoid unit z [N, 1]: their sigmoids are exactly 1 - p and p, and the map of
    class 0 is the evidence against class 1. A MatMul with the constant [[-1, 1]], as the Keras path's Dense(2)."""
    signs = PREFIX + "binary_signs"
    graph.initializer.append(numpy_helper.from_array(np.array([[-1.0, 1.0]], np.float32), signs))
    graph.node.append(helper.make_node("MatMul", [z, signs], [BINARY_LOGITS], name=BINARY_LOGITS))
    graph.value_info.append(helper.make_tensor_value_info(BINARY_LOGITS, onnx.TensorProto.FLOAT, ["N", 2]))


def _layout(dims: list[int | None], layout: str, name: str) -> str:
    if layout != "auto":
        channels = dims[1] if layout == "nchw" else dims[3]
        if channels not in (3, None):
            raise ExportError(f"input {name}: --layout {layout} puts {channels} channels there, not 3")
        return layout
    if dims[1] == 3 and dims[3] != 3:
        return "nchw"
    if dims[3] == 3 and dims[1] != 3:
        return "nhwc"
    raise ExportError(f"input {name} {dims}: cannot tell NCHW from NHWC; give --layout nchw|nhwc")


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    values = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    return {
        value.name: [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        for value in values
    } | {init.name: list(init.dims) for init in model.graph.initializer}


def _shape(model: onnx.ModelProto, name: str) -> list[int | None] | None:
    return _shapes(model).get(name)


def _last_dim(model: onnx.ModelProto, name: str) -> int | None:
    shape = _shape(model, name)
    return shape[-1] if shape and len(shape) == 2 else None


def linear_head(classifier: Classifier) -> LinearHead:
    """The global-pooling + linear head above the target tensor; ExportError naming the first node
    that is not one."""
    model = classifier.model
    made_by = producers(model.graph)
    constants = initializers(model.graph)
    node = made_by[classifier.logits]
    scale, bias_free = 1.0, node
    if node.op_type == "Add":
        constant = [name for name in node.input if name in constants]
        if len(constant) != 1:
            raise _not_linear(node)
        bias_free = made_by.get(next(name for name in node.input if name not in constants))
        if bias_free is None or bias_free.op_type != "MatMul":
            raise _not_linear(node if bias_free is None else bias_free)
    if bias_free.op_type == "Gemm":
        attributes = {a.name: helper.get_attribute_value(a) for a in bias_free.attribute}
        if attributes.get("transA", 0) or bias_free.input[1] not in constants:
            raise _not_linear(bias_free)
        scale = float(attributes.get("alpha", 1.0))
        by_classes = bool(attributes.get("transB", 0))
    elif bias_free.op_type == "MatMul" and bias_free.input[1] in constants:
        by_classes = False
    else:
        raise _not_linear(bias_free)
    weight = bias_free.input[1]
    node = made_by.get(bias_free.input[0])
    while node is not None and node.op_type in PASS_THROUGH:
        node = made_by.get(node.input[0])
    if node is None:
        raise ExportError("no global pooling before the linear layer: no spatial tensor to explain")
    target, target_layout = _pooled(model, node, constants)
    shape = _shape(model, target)
    if shape is None or len(shape) != 4 or None in shape[1:]:
        raise ExportError(f"tensor {target}: its shape is unknown ({shape}); no spatial tensor to explain")
    h, w, channels = (shape[2], shape[3], shape[1]) if target_layout == "nchw" else tuple(shape[1:4])
    if h * w <= 1:
        raise ExportError(f"tensor {target} is {h}x{w}: no spatial tensor to explain")
    matrix_shape = list(constants[weight].dims)
    if matrix_shape != ([classifier.classes, channels] if by_classes else [channels, classifier.classes]):
        raise _not_linear(bias_free)
    return LinearHead(target, target_layout, (h, w), channels, weight, by_classes, scale / (h * w))


def _pooled(model: onnx.ModelProto, node: onnx.NodeProto, constants: dict) -> tuple[str, str]:
    """(the pooled 4-D tensor, its layout) when `node` is a global average pooling."""
    if node.op_type == "GlobalAveragePool":
        return node.input[0], "nchw"
    if node.op_type == "ReduceMean":
        axes = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1:
            axes = _constant_value(model.graph, node.input[1], constants)
        shape = _shape(model, node.input[0])
        if axes is not None and shape is not None and len(shape) == 4:
            axes = sorted(int(a) % 4 for a in axes)
            if axes == [2, 3]:
                return node.input[0], "nchw"
            if axes == [1, 2]:
                return node.input[0], "nhwc"
    raise ExportError(f"unsupported head op {node.op_type} (node {node.name or node.output[0]}): "
                      "this import explains heads made of global average pooling then one linear layer")


def _constant_value(graph: onnx.GraphProto, name: str, constants: dict) -> list | None:
    """The value of an initializer or Constant node output `name`, else None."""
    if name in constants:
        return numpy_helper.to_array(constants[name]).tolist()
    node = producers(graph).get(name)
    if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
        return numpy_helper.to_array(node.attribute[0].t).tolist()
    return None


def _not_linear(node: onnx.NodeProto) -> ExportError:
    return ExportError(f"unsupported head op {node.op_type} (node {node.name or node.output[0]}): the logits must "
                       "come from one linear layer (Gemm, or MatMul with a constant matrix) after global pooling")


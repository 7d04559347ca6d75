"""Add the onnxcam contract around an imported classifier: raw RGB NHWC in, every output out."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import contract
from .graph import Classifier, Head, LinearHead
from .head_gradients import general_gradients
from .names import PREFIX
# Per RGB channel, in 0..255 pixel units; caffe also reorders to BGR.
PREPROCESSING = {
    "torch": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "caffe": ((123.68, 116.779, 103.939), (1.0, 1.0, 1.0)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def gradcam_model(
    classifier: Classifier, head: Head, mean: tuple[float, ...], std: tuple[float, ...], bgr: bool
) -> onnx.ModelProto:
    """The classifier's graph with preprocessing before it and the contract's outputs after it."""
    model = onnx.ModelProto()
    model.CopyFrom(classifier.model)
    graph = model.graph
    del graph.value_info[:]
    output = graph.output[0].name
    # the trailing Softmax or Sigmoid: the probabilities are made again from the logits
    nodes = [n for n in graph.node if not (classifier.squashed and output in n.output)]
    constants = _constants(head, mean, std, bgr)
    if isinstance(head, LinearHead):
        gradients, gradient_constants = _linear_gradients(head), []
    else:
        gradients, gradient_constants = general_gradients(classifier, head)
    node = helper.make_node
    p = PREFIX
    pre, nodes = _preprocessing(classifier, nodes, mean, std, bgr)
    maps = [node("Transpose", [head.target], [contract.OUTPUT_FEATURE_MAPS], perm=[0, 2, 3, 1])
            if head.target_layout == "nchw" else node("Identity", [head.target], [contract.OUTPUT_FEATURE_MAPS])]
    post = [
        node("Softmax", [classifier.logits], [contract.OUTPUT_PROBABILITIES], axis=-1)
        if classifier.activation == "softmax" else node("Sigmoid", [classifier.logits], [contract.OUTPUT_PROBABILITIES]),
        node("Shape", [contract.INPUT_CLASS_INDEX], [p + "index_shape"]),
        node("Slice", [p + "index_shape", p + "one", p + "two"], [p + "k"]),
        node("TopK", [contract.OUTPUT_PROBABILITIES, p + "k"], [p + "top_values", p + "top_classes"], axis=1),
        node("Less", [contract.INPUT_CLASS_INDEX, p + "zero"], [p + "wants_top"]),
        node("Where", [p + "wants_top", p + "top_classes", contract.INPUT_CLASS_INDEX],
             [contract.OUTPUT_EXPLAINED_CLASS]),
        node("GatherElements", [classifier.logits, contract.OUTPUT_EXPLAINED_CLASS], [contract.OUTPUT_SCORE], axis=1),
        *gradients,
        node("Unsqueeze", [contract.OUTPUT_POOLED_GRADIENTS, p + "axes_hw"], [p + "pooled_5d"]),
        *maps,
        node("Unsqueeze", [contract.OUTPUT_FEATURE_MAPS, p + "one"], [p + "maps_5d"]),
        node("Mul", [p + "maps_5d", p + "pooled_5d"], [p + "weighted"]),
        node("ReduceSum", [p + "weighted", p + "last"], [p + "cam_sum"], keepdims=0),
        node("Relu", [p + "cam_sum"], [contract.OUTPUT_CAM]),
    ]
    del graph.node[:]
    graph.node.extend(pre + nodes + post)
    used = {name for n in graph.node for name in n.input}
    graph.initializer.extend(c for c in constants + gradient_constants if c.name in used)
    height, width = classifier.input_size
    (h, w), channels, classes = head.map_size, head.channels, classifier.classes
    del graph.input[:]
    graph.input.extend([
        helper.make_tensor_value_info(contract.INPUT_IMAGE, TensorProto.FLOAT, ["N", height, width, 3]),
        helper.make_tensor_value_info(contract.INPUT_CLASS_INDEX, TensorProto.INT64, ["N", "K"]),
    ])
    shapes = {
        contract.OUTPUT_PROBABILITIES: (TensorProto.FLOAT, ["N", classes]),
        contract.OUTPUT_EXPLAINED_CLASS: (TensorProto.INT64, ["N", "K"]),
        contract.OUTPUT_SCORE: (TensorProto.FLOAT, ["N", "K"]),
        contract.OUTPUT_FEATURE_MAPS: (TensorProto.FLOAT, ["N", h, w, channels]),
        contract.OUTPUT_GRADIENTS: (TensorProto.FLOAT, ["N", "K", h, w, channels]),
        contract.OUTPUT_POOLED_GRADIENTS: (TensorProto.FLOAT, ["N", "K", channels]),
        contract.OUTPUT_CAM: (TensorProto.FLOAT, ["N", "K", h, w]),
    }
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(name, *shapes[name]) for name in contract.OUTPUTS)
    return model


def _preprocessing(classifier: Classifier, nodes: list[onnx.NodeProto], mean, std, bgr: bool
                   ) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """(the nodes from raw RGB NHWC `image` to the model's input, the model's nodes to keep).

    The image is made NCHW first and normalised there, where each channel is one contiguous plane:
    the same Sub and Div broadcast over NHWC's last axis of 3 cost onnxruntime 3.6 ms per 224x224 image
    against 0.14 ms (measured on 2 cores; 19% of MobileNetV2 at batch 1). An NHWC model (tf2onnx's) whose
    input is read only by Transposes to NCHW gets the NCHW tensor in their place; else it is transposed back.
    A mean of 0 or a std of 1 (none, caffe) is no op at all."""
    node, p = helper.make_node, PREFIX
    pre = [node("Transpose", [contract.INPUT_IMAGE], [p + "image_nchw"], perm=[0, 3, 1, 2])]
    tensor = p + "image_nchw"
    for needed, op, constant in ((bgr, "Gather", p + "bgr"), (any(m != 0 for m in mean), "Sub", p + "mean"),
                                 (any(s != 1 for s in std), "Div", p + "std")):
        if needed:
            pre.append(node(op, [tensor, constant], [f"{p}{op.lower()}_out"], **({"axis": 1} if op == "Gather" else {})))
            tensor = f"{p}{op.lower()}_out"
    pre.append(node("Identity", [tensor], [p + "scaled"]))
    if classifier.layout == "nchw":
        return pre + [node("Identity", [p + "scaled"], [classifier.input_name])], nodes
    readers = [n for n in nodes if classifier.input_name in n.input]
    to_nchw = [n for n in readers if n.op_type == "Transpose" and len(n.input) == 1
               and [int(i) for i in next((helper.get_attribute_value(a) for a in n.attribute if a.name == "perm"),
                                         [])] == [0, 3, 1, 2]]
    if readers and to_nchw == readers and classifier.input_name not in {o.name for o in classifier.model.graph.output}:
        replaced = {id(n) for n in to_nchw}
        return (pre + [node("Identity", [p + "scaled"], [n.output[0]]) for n in to_nchw],
                [n for n in nodes if id(n) not in replaced])
    return pre + [node("Transpose", [p + "scaled"], [classifier.input_name], perm=[0, 2, 3, 1])], nodes


def _linear_gradients(head: LinearHead) -> list[onnx.NodeProto]:
    """Closed form: the pooled gradient of class c is row c of the linear layer / (h·w), everywhere."""
    node, p = helper.make_node, PREFIX
    if head.weight_is_classes_by_channels:
        rows = [node("Gather", [head.weight, contract.OUTPUT_EXPLAINED_CLASS], [p + "rows"], axis=0)]
    else:  # [C, classes]: gather columns, then bring C last
        rows = [node("Gather", [head.weight, contract.OUTPUT_EXPLAINED_CLASS], [p + "columns"], axis=1),
                node("Transpose", [p + "columns"], [p + "rows"], perm=[1, 2, 0])]
    return rows + [
        node("Mul", [p + "rows", p + "scale"], [contract.OUTPUT_POOLED_GRADIENTS]),
        node("Unsqueeze", [contract.OUTPUT_POOLED_GRADIENTS, p + "axes_hw"], [p + "linear_5d"]),
        node("Expand", [p + "linear_5d", p + "map_shape"], [contract.OUTPUT_GRADIENTS]),
    ]


def _constants(head: Head, mean, std, bgr: bool) -> list[onnx.TensorProto]:
    order = [2, 1, 0] if bgr else [0, 1, 2]
    h, w = head.map_size
    arrays = {
        "bgr": np.array([2, 1, 0], np.int64),
        "mean": np.array([mean[i] for i in order], np.float32).reshape(3, 1, 1),  # per channel of NCHW
        "std": np.array([std[i] for i in order], np.float32).reshape(3, 1, 1),
        "one": np.array([1], np.int64),
        "two": np.array([2], np.int64),
        "zero": np.array(0, np.int64),
        "last": np.array([-1], np.int64),
        "axes_hw": np.array([2, 3], np.int64),
        "map_shape": np.array([1, 1, h, w, 1], np.int64),
        "scale": np.array(getattr(head, "scale", 1.0), np.float32),
    }
    return [numpy_helper.from_array(value, PREFIX + name) for name, value in arrays.items()]

"""A tiny onnxcam model written with onnx.helper, for the runtime's tests (no TensorFlow).

image [N, 32, 32, 3] -> /255 -> 2x2 average pool -> 2x2 average pool -> feature_maps [N, 8, 8, 3]
(the image's colours, coarse) -> global average -> logits = mean colour @ WEIGHTS -> softmax. The
gradient of a logit with respect to feature_maps is WEIGHTS[c, k] / 64 at every position, so a
coloured blob lights up the cam of its colour class exactly where it is. With `layers=2` the first
pool's output is a second target layer, feature_maps.1 [N, 16, 16, 3], whose gradient is
WEIGHTS[c, k] / 256 at every position.
"""

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime import contract

LABELS = ["red", "green", "blue", "bright white"]  # the space checks file-name-safe labels
WEIGHTS = np.array(  # [channel, class]
    [[20, -10, -10, 10], [-10, 20, -10, 10], [-10, -10, 20, 10]], dtype=np.float32
)
INPUT_SIZE = (32, 32)
POOL = 4
MAP_SIZE = (INPUT_SIZE[0] // POOL, INPUT_SIZE[1] // POOL)
FINE_MAP_SIZE = (INPUT_SIZE[0] // 2, INPUT_SIZE[1] // 2)  # layer 1 of a two-layer fake
LAYERS = ("average_pool", "fine_average_pool")


def fake_metadata(labels: list[str] = LABELS, layers: int = 1) -> dict[str, str]:
    """The metadata an onnxcam export writes, filled in for the fake model."""
    return {
        contract.META_FORMAT: contract.FORMAT,
        contract.META_MODEL: "fake",
        contract.META_LABELS: json.dumps(labels),
        contract.META_INPUT_SIZE: json.dumps(list(INPUT_SIZE)),
        contract.META_PREPROCESSING: "none",
        contract.META_LAYER: LAYERS[0],
        contract.META_LAYERS: json.dumps(list(LAYERS[:layers])),
        contract.META_SCORE: "logit",
        contract.META_WEIGHTS: json.dumps({"source": "tests/fake_model.py", "sha256": "0" * 64}),
        contract.META_VERSIONS: json.dumps({"onnxcam": "0.1.0", "onnx": onnx.__version__, "opset": 17}),
        contract.META_SELF_CHECK: json.dumps({"cam": 0.0}),
    }


def write_fake_model(path: str | Path, metadata: dict[str, str] | None = None, layers: int = 1) -> Path:
    """Write the fake model to `path` with `metadata` (default: fake_metadata(layers=layers)), with
    one target layer (feature_maps, 8x8) or two (and feature_maps.1, 16x16)."""
    constants = [
        numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "inverse_255"),
        numpy_helper.from_array(WEIGHTS, "weights"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes_hw"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_k"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis_channel"),
    ]
    node = helper.make_node
    fine = contract.layer_output(contract.OUTPUT_FEATURE_MAPS, 1)
    nodes = [
        node("Mul", ["image", "inverse_255"], ["scaled"]),
        node("Transpose", ["scaled"], ["nchw"], perm=[0, 3, 1, 2]),
        node("AveragePool", ["nchw"], ["fine_pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        node("AveragePool", ["fine_pooled"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Transpose", ["pooled"], [contract.OUTPUT_FEATURE_MAPS], perm=[0, 2, 3, 1]),
        node("ReduceMean", [contract.OUTPUT_FEATURE_MAPS], ["mean_colour"], axes=[1, 2], keepdims=0),
        node("MatMul", ["mean_colour", "weights"], ["logits"]),
        node("Softmax", ["logits"], [contract.OUTPUT_PROBABILITIES], axis=1),
        # -1 in column k = the k-th most probable class
        node("Shape", [contract.INPUT_CLASS_INDEX], ["k"], start=1, end=2),
        node("TopK", [contract.OUTPUT_PROBABILITIES, "k"], ["top_values", "top_classes"], axis=1),
        node("Less", [contract.INPUT_CLASS_INDEX, "zero"], ["wants_top"]),
        node(
            "Where",
            ["wants_top", "top_classes", contract.INPUT_CLASS_INDEX],
            [contract.OUTPUT_EXPLAINED_CLASS],
        ),
        node("GatherElements", ["logits", contract.OUTPUT_EXPLAINED_CLASS], [contract.OUTPUT_SCORE], axis=1),
    ]
    nodes += _gradient_nodes(0, MAP_SIZE, constants)
    if layers == 2:
        nodes.append(node("Transpose", ["fine_pooled"], [fine], perm=[0, 2, 3, 1]))
        nodes += _gradient_nodes(1, FINE_MAP_SIZE, constants)
    float_, int64 = TensorProto.FLOAT, TensorProto.INT64
    classes, channels = WEIGHTS.shape[1], WEIGHTS.shape[0]
    outputs = {
        contract.OUTPUT_PROBABILITIES: (float_, ["N", classes]),
        contract.OUTPUT_EXPLAINED_CLASS: (int64, ["N", "K"]),
        contract.OUTPUT_SCORE: (float_, ["N", "K"]),
    }
    for layer, (h, w) in list(enumerate((MAP_SIZE, FINE_MAP_SIZE)))[:layers]:
        outputs |= {
            contract.layer_output(contract.OUTPUT_FEATURE_MAPS, layer): (float_, ["N", h, w, channels]),
            contract.layer_output(contract.OUTPUT_GRADIENTS, layer): (float_, ["N", "K", h, w, channels]),
            contract.layer_output(contract.OUTPUT_POOLED_GRADIENTS, layer): (float_, ["N", "K", channels]),
            contract.layer_output(contract.OUTPUT_CAM, layer): (float_, ["N", "K", h, w]),
        }
    graph = helper.make_graph(
        nodes,
        "onnxcam_fake",
        [
            helper.make_tensor_value_info(contract.INPUT_IMAGE, float_, ["N", *INPUT_SIZE, 3]),
            helper.make_tensor_value_info(contract.INPUT_CLASS_INDEX, int64, ["N", "K"]),
        ],
        [
            helper.make_tensor_value_info(name, kind, shape)
            for name, kind, shape in ((name, *spec) for name, spec in outputs.items())
        ],
        initializer=constants,
    )
    return _save(graph, path, fake_metadata(layers=layers) if metadata is None else metadata)


def _gradient_nodes(
    layer: int, size: tuple[int, int], constants: list[onnx.TensorProto]
) -> list[onnx.NodeProto]:
    """gradients, pooled_gradients and cam of target layer `layer`, whose map is `size`: the
    logits are the mean of feature_maps @ WEIGHTS, so the gradient is WEIGHTS / (h * w) everywhere."""
    h, w = size
    pooled, gradients, feature_maps, cam = (
        contract.layer_output(output, layer)
        for output in (
            contract.OUTPUT_POOLED_GRADIENTS,
            contract.OUTPUT_GRADIENTS,
            contract.OUTPUT_FEATURE_MAPS,
            contract.OUTPUT_CAM,
        )
    )
    table, shape = f"pooled_gradient_table_{layer}", f"map_shape_{layer}"
    constants += [
        numpy_helper.from_array(np.ascontiguousarray(WEIGHTS.T) / (h * w), table),
        numpy_helper.from_array(np.array([1, 1, h, w, 1], dtype=np.int64), shape),
    ]
    node = helper.make_node
    pooled_5d, maps_5d, weighted, cam_sum = (
        f"{x}_{layer}" for x in ("pooled_5d", "maps_5d", "weighted", "cam_sum")
    )
    return [
        node("Gather", [table, contract.OUTPUT_EXPLAINED_CLASS], [pooled], axis=0),
        node("Unsqueeze", [pooled, "axes_hw"], [pooled_5d]),
        node("Expand", [pooled_5d, shape], [gradients]),
        node("Unsqueeze", [feature_maps, "axis_k"], [maps_5d]),
        node("Mul", [maps_5d, pooled_5d], [weighted]),
        node("ReduceSum", [weighted, "axis_channel"], [cam_sum], keepdims=0),
        node("Relu", [cam_sum], [cam]),
    ]


def write_identity_model(path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """A valid ONNX model that is not an onnxcam one: y = Identity(x)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return _save(graph, path, metadata or {})


def _save(graph: onnx.GraphProto, path: str | Path, metadata: dict[str, str]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return Path(path)


def blob_image(height: int, width: int, box: tuple[int, int, int, int], colour=(255, 0, 0)) -> np.ndarray:
    """A black HxWx3 uint8 image with one coloured box (x0, y0, x1, y1, exclusive ends)."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = colour
    return image

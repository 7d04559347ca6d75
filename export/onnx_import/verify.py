"""Self-check with no framework: the imported model against the original in onnxruntime, and its
gradients against central finite differences of the original head."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, numpy_helper

from export import contract
from export.errors import ExportError
from export.onnx_import.graph import Classifier, LinearHead

MAX_RELATIVE_ERROR = 1e-4
FLOAT32_GRADIENT_LIMIT = 1e-2  # finite differences in float32 (no float64 kernels): rounding dominates
DIRECTIONS = 4


def self_check(
    imported: onnx.ModelProto, classifier: Classifier, head: LinearHead,
    mean: tuple[float, ...], std: tuple[float, ...], bgr: bool, seed: int = 0,
) -> dict:
    """Relative error per output; ExportError when one is above its limit."""
    rng = np.random.default_rng(seed)
    height, width = classifier.input_size
    images = rng.uniform(0, 255, (2, height, width, 3)).astype(np.float32)
    class_index = np.array([[-1, 0], [-1, classifier.classes - 1]], np.int64)
    ours = dict(zip(contract.OUTPUTS, _session(imported).run(
        list(contract.OUTPUTS), {contract.INPUT_IMAGE: images, contract.INPUT_CLASS_INDEX: class_index})))
    reference = _reference(classifier, head, images, mean, std, bgr)
    expected_scores = np.take_along_axis(reference["logits"], ours[contract.OUTPUT_EXPLAINED_CLASS], axis=1)
    maps = reference["target"] if head.target_layout == "nhwc" else reference["target"].transpose(0, 2, 3, 1)
    errors = {
        contract.OUTPUT_PROBABILITIES: _relative(ours[contract.OUTPUT_PROBABILITIES], reference["probabilities"]),
        contract.OUTPUT_SCORE: _relative(ours[contract.OUTPUT_SCORE], expected_scores),
        contract.OUTPUT_FEATURE_MAPS: _relative(ours[contract.OUTPUT_FEATURE_MAPS], maps),
    }
    gradient_error, precision = _finite_differences(classifier, head, reference["target"], ours, rng)
    errors[contract.OUTPUT_GRADIENTS] = gradient_error
    limits = {name: MAX_RELATIVE_ERROR for name in errors}
    limits[contract.OUTPUT_GRADIENTS] = MAX_RELATIVE_ERROR if precision == "float64" else FLOAT32_GRADIENT_LIMIT
    for name, error in errors.items():
        if not error <= limits[name]:
            raise ExportError(f"self-check failed: {name} is {error:.1e} relative from the original model "
                              f"(limit {limits[name]:.0e}); nothing was written")
    return {
        "reference": "the original ONNX model in onnxruntime; gradients: central finite differences "
                     f"in {DIRECTIONS} random directions ({precision})",
        "outputs": {name: {"relative": float(error), "limit": limits[name]} for name, error in errors.items()},
    }


def _session(model: onnx.ModelProto) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|."""
    scale = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected))) / scale


def _reference(classifier: Classifier, head: LinearHead, images, mean, std, bgr: bool) -> dict[str, np.ndarray]:
    """The original model's output, logits and target tensor on preprocessed `images`."""
    rgb = images[..., ::-1] if bgr else images
    order = [2, 1, 0] if bgr else [0, 1, 2]
    pixels = ((rgb - np.float32([mean[i] for i in order])) / np.float32([std[i] for i in order])).astype(np.float32)
    if classifier.layout == "nchw":
        pixels = pixels.transpose(0, 3, 1, 2)
    model = onnx.ModelProto()
    model.CopyFrom(classifier.model)
    output = model.graph.output[0].name
    for name in (classifier.logits, head.target):
        if name != output:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    names = [output] + [n for n in (classifier.logits, head.target) if n != output]
    values = dict(zip(names, _session(model).run(names, {classifier.input_name: np.ascontiguousarray(pixels)})))
    logits = values[classifier.logits].astype(np.float64)
    if classifier.softmax_node is not None:
        probabilities = values[output]
    else:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    return {"probabilities": probabilities, "logits": logits, "target": values[head.target]}


def _finite_differences(classifier, head, target: np.ndarray, ours: dict, rng) -> tuple[float, str]:
    """Max over random directions d of |(f(T + εd) - f(T - εd)) / 2ε - <gradients, d>| relative."""
    extracted = onnx.utils.Extractor(classifier.model).extract_model([head.target], [classifier.logits])
    run, precision = _head_runner(extracted, head.target, classifier.logits)
    dtype = np.float64 if precision == "float64" else np.float32
    classes = ours[contract.OUTPUT_EXPLAINED_CLASS]
    gradients = ours[contract.OUTPUT_GRADIENTS].astype(np.float64)  # [N, K, h, w, C]
    epsilon = (1e-3 if precision == "float64" else 1e-1) * float(np.std(target) or 1.0)
    worst = 0.0
    for _ in range(DIRECTIONS):
        direction = rng.standard_normal(target.shape)
        plus = run((target + epsilon * direction).astype(dtype))
        minus = run((target - epsilon * direction).astype(dtype))
        numeric = np.take_along_axis((plus - minus) / (2 * epsilon), classes, axis=1)
        nhwc = direction if head.target_layout == "nhwc" else direction.transpose(0, 2, 3, 1)
        analytic = np.einsum("nkhwc,nhwc->nk", gradients, nhwc)
        worst = max(worst, _relative(numeric, analytic))
    return worst, precision


def _head_runner(head: onnx.ModelProto, target: str, logits: str):
    """Run the head in float64 where onnxruntime has the kernels, else in float32."""
    try:
        session = _session(_as_float64(head))
        precision = "float64"
    except Exception:  # an op without a double kernel
        session, precision = _session(head), "float32"
    return (lambda value: session.run([logits], {target: value})[0].astype(np.float64)), precision


def _as_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy computing in float64: float initializers, values and Cast targets become double."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            graph.initializer[index].CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float64), init.name))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.DOUBLE
    return copy

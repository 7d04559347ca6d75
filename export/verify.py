"""Self-check: the ONNX model in onnxruntime against Grad-CAM computed in TensorFlow.

The reference is written independently of `export.wrap`: the keras.io recipe (one eager
GradientTape per image over the whole model, Keras' own `preprocess_input`), so it checks
the wrapper's logic and the conversion at once. It runs on a float64 copy of the model:
measured on ResNet50 at conv4_block6_out, TensorFlow's own float32 eager gradients are 2e-4
(relative) away from float64 while onnxruntime's float32 graph is 3e-7 away, so a float32
reference would fail exports that are in fact exact.
"""

from __future__ import annotations

import keras
import numpy as np
import onnxruntime
import tensorflow as tf

from . import contract
from .errors import ExportError, one_line

MAX_RELATIVE_ERROR = 1e-4
# When the head between the target layer and the logits has nonlinear units (ReLU blocks), the
# gradient-derived outputs are ill-conditioned at float32: a unit within rounding of 0 flips its
# mask. Measured on ResNet50 at conv3_block4_out: perturbing the weights by 6e-8 (float32
# rounding) moves the float64 reference's gradients by 3e-4; onnxruntime's float32 graph was
# 5e-7 away on most images and up to 1.2e-3 (gradients) / 2.5e-4 (pooled) / 2.4e-5 (cam) on
# some, while every forward output stayed within 1e-6. A converter bug is far larger than that.
NONLINEAR_HEAD_LIMIT = 1e-2
GRADIENT_OUTPUTS = (contract.OUTPUT_GRADIENTS, contract.OUTPUT_POOLED_GRADIENTS, contract.OUTPUT_CAM)


def relative_limit(output: str, linear_head: bool) -> float:
    """The largest relative error the self-check accepts for `output` (any layer's)."""
    if not linear_head and output.split(".")[0] in GRADIENT_OUTPUTS:
        return NONLINEAR_HEAD_LIMIT
    return MAX_RELATIVE_ERROR


def float64_copy(model: keras.Model) -> keras.Model | None:
    """The same model computing in float64, or None where Keras cannot rebuild it so."""

    def to_float64(config: object) -> object:
        if isinstance(config, dict):
            return {key: "float64" if key == "dtype" else to_float64(value) for key, value in config.items()}
        if isinstance(config, list):
            return [to_float64(value) for value in config]
        return config

    try:
        copy = model.__class__.from_config(to_float64(model.get_config()))
        copy.set_weights([weight.astype(np.float64) for weight in model.get_weights()])
    except Exception:  # custom layers, fixed-dtype layers: fall back to the float32 model
        return None
    return copy


def reference_outputs(
    model: keras.Model, layers: list[str], preprocessing: str, score: str,
    images: np.ndarray, class_index: np.ndarray, activation: str = "softmax",
) -> dict[str, np.ndarray]:
    """Every contract output, computed per image with an eager GradientTape."""
    squash = tf.nn.softmax if activation == "softmax" else tf.sigmoid
    operations = {operation.name: operation for operation in model.operations}
    targets = [operations[name].output for name in layers]
    grad_model = keras.Model(model.input, [*targets, model.output])
    rows: dict[str, list[np.ndarray]] = {}
    for image, wanted in zip(images, class_index):
        pixels = image[None].astype(model.output.dtype)
        if preprocessing != "none":
            pixels = keras.applications.imagenet_utils.preprocess_input(pixels, mode=preprocessing)
        with tf.GradientTape(persistent=True) as tape:
            *all_maps, logits = grad_model(pixels, training=False)
            probabilities = squash(logits)
            scores = probabilities if score == "probability" else logits
            ranked = np.argsort(-logits.numpy()[0], kind="stable")
            classes = np.where(wanted < 0, ranked[: len(wanted)], wanted)
            class_scores = [scores[0, c] for c in classes]
        row = {
            contract.OUTPUT_PROBABILITIES: probabilities.numpy()[0],
            contract.OUTPUT_EXPLAINED_CLASS: classes.astype(np.int64),
            contract.OUTPUT_SCORE: scores.numpy()[0, classes],
        }
        for index, maps in enumerate(all_maps):
            gradients = np.stack([tape.gradient(s, maps).numpy()[0] for s in class_scores])
            pooled = gradients.mean(axis=(1, 2))
            maps = maps.numpy()[0]
            row[contract.layer_output(contract.OUTPUT_FEATURE_MAPS, index)] = maps
            row[contract.layer_output(contract.OUTPUT_GRADIENTS, index)] = gradients
            row[contract.layer_output(contract.OUTPUT_POOLED_GRADIENTS, index)] = pooled
            cam = np.maximum(np.einsum("kc,hwc->khw", pooled, maps), 0)
            row[contract.layer_output(contract.OUTPUT_CAM, index)] = cam
        del tape
        for name, value in row.items():
            rows.setdefault(name, []).append(value)
    return {name: np.stack(values) for name, values in rows.items()}


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖ (absolute ‖a − b‖ where ‖b‖ is 0, e.g. an all-zero map)."""
    difference = float(np.linalg.norm(actual.astype(np.float64) - expected.astype(np.float64)))
    norm = float(np.linalg.norm(expected.astype(np.float64)))
    return difference / norm if norm > 0 else difference


def worst_of(cases: list[tuple[float, float]]) -> dict[str, float]:
    """The largest (max_abs, relative) over the cases; a NaN anywhere stays NaN (Python's max
    would drop it when it is not first)."""
    max_abs, relative = np.max(np.array(cases, dtype=np.float64), axis=0)
    return {"max_abs": float(max_abs), "relative": float(relative)}


def self_check_cases(classes: int, input_size: tuple[int, int], seed: int = 0):
    """Random 0..255 images with mixed given / -1 class indices, at two batch shapes."""
    rng = np.random.default_rng(seed)
    height, width = input_size
    given = rng.integers(0, classes, size=5)
    four = rng.uniform(0, 255, (4, height, width, 3)).astype(np.float32)
    four_index = np.array(
        [[-1, given[0], -1], [given[1], -1, -1], [-1, -1, given[2]], [given[3], given[4], -1]], np.int64
    )
    one = rng.uniform(0, 255, (1, height, width, 3)).astype(np.float32)
    return [(four, four_index[:, : min(3, classes)]), (one, np.array([[-1]], np.int64))]


def self_check(
    onnx_bytes: bytes, model: keras.Model, layers: list[str], preprocessing: str, score: str,
    input_size: tuple[int, int], linear_head: bool, activation: str = "softmax",
) -> dict[str, object]:
    """Compare every output; return the figures ({"outputs": {name: {max_abs, relative}}, ...});
    raise ExportError above the limit or when onnxruntime cannot run the model."""
    try:
        session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ExportError(f"onnxruntime cannot load the converted model: {one_line(error)}") from None
    classes = int(model.output.shape[-1])
    reference_model = float64_copy(model) or model
    names = [output.name for output in session.get_outputs()]
    per_case: dict[str, list[tuple[float, float]]] = {}
    for images, class_index in self_check_cases(classes, input_size):
        try:
            values = session.run(names, {contract.INPUT_IMAGE: images, contract.INPUT_CLASS_INDEX: class_index})
        except Exception as error:
            raise ExportError(f"onnxruntime cannot run the converted model: {one_line(error)}") from None
        actual = dict(zip(names, values))
        expected = reference_outputs(reference_model, layers, preprocessing, score, images, class_index, activation)
        if sorted(actual) != sorted(expected):
            raise ExportError(f"self-check failed: ONNX outputs {sorted(actual)}, expected {sorted(expected)}")
        if not np.array_equal(actual[contract.OUTPUT_EXPLAINED_CLASS], expected[contract.OUTPUT_EXPLAINED_CLASS]):
            raise ExportError(
                f"self-check failed: ONNX explains classes {actual[contract.OUTPUT_EXPLAINED_CLASS].tolist()}, "
                f"TensorFlow {expected[contract.OUTPUT_EXPLAINED_CLASS].tolist()}"
            )
        for name in expected:
            if actual[name].shape != expected[name].shape:
                raise ExportError(
                    f"self-check failed: {name} has shape {actual[name].shape}, TensorFlow {expected[name].shape}"
                )
            max_abs = float(np.max(np.abs(actual[name] - expected[name])))
            per_case.setdefault(name, []).append((max_abs, relative_error(actual[name], expected[name])))
    figures = {name: worst_of(cases) for name, cases in per_case.items()}
    for name, errors in figures.items():
        if not errors["relative"] <= relative_limit(name, linear_head):  # also catches NaN
            raise ExportError(
                f"self-check failed: {name} differs from TensorFlow by {errors['relative']:.2e} "
                f"relative (limit {relative_limit(name, linear_head):.0e}); the file was not written"
            )
    return {
        "reference": f"TensorFlow eager GradientTape, {reference_model.output.dtype}",
        "cases": "4 random images x 3 classes (given and -1), 1 x 1 (-1)",
        "limit_relative": {name: relative_limit(name, linear_head) for name in figures},
        "outputs": figures,
    }

"""Reads and checks the metadata an onnxcam `.onnx` file carries, into a small frozen record.

The runtime reads metadata through onnxruntime (`custom_metadata_map`), so it never needs the
`onnx` package.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from . import contract
from .errors import ModelError
from .session import ort  # imported there, its import-time log caught

EXPORT_HINT = "export one with python -m export.build"
JSON_OBJECT_KEYS = (contract.META_WEIGHTS, contract.META_VERSIONS, contract.META_SELF_CHECK)
TEXT_KEYS = (
    contract.META_MODEL,
    contract.META_PREPROCESSING,
    contract.META_LAYER,
    contract.META_SCORE,
)


@dataclass(frozen=True)
class ModelCard:
    """What the model says about itself."""

    path: str
    model: str
    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    preprocessing: str  # done inside the graph; informational
    layer: str  # the layer whose output is feature_maps
    layers: tuple[str, ...]  # every target layer; layers[i] gives the outputs contract.layer_output(name, i)
    score: str  # logit | probability
    weights: dict[str, Any]
    versions: dict[str, Any]
    self_check: dict[str, Any]
    activation: str = "softmax"  # softmax over the classes, or sigmoid: one independent probability per class

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def random_weights(self) -> bool:
        """True when the export says its weights were random (`--weights none`): the maps and
        predictions then mean nothing."""
        return bool(self.weights.get("random")) or str(self.weights.get("source", "")).startswith("none")


def read_model_card(path: str, session: ort.InferenceSession) -> ModelCard:
    """Check that `session` holds an onnxcam model and return its card; ModelError if not."""
    metadata = session.get_modelmeta().custom_metadata_map
    if contract.META_FORMAT not in metadata:
        raise ModelError(f"{path}: not an onnxcam model (no {contract.META_FORMAT} metadata); {EXPORT_HINT}")
    if metadata[contract.META_FORMAT] != contract.FORMAT:
        raise ModelError(
            f"{path}: unsupported format {metadata[contract.META_FORMAT]!r} "
            f"(this runtime reads {contract.FORMAT}); {EXPORT_HINT}"
        )
    missing = [key for key in contract.METADATA if key not in metadata]
    if missing:
        raise ModelError(f"{path}: not a complete onnxcam model (missing metadata {', '.join(missing)})")
    card = ModelCard(
        path=path,
        labels=_labels(path, metadata),
        input_size=_input_size(path, metadata),
        **{_field(key): _text(path, metadata, key) for key in TEXT_KEYS},
        **{_field(key): _json_object(path, metadata, key) for key in JSON_OBJECT_KEYS},
        layers=_layers(path, metadata),
        activation=metadata.get(contract.META_ACTIVATION, "softmax"),
    )
    if card.activation not in contract.ACTIVATIONS:
        raise ModelError(
            f"{path}: metadata {contract.META_ACTIVATION} is {card.activation!r}, not one of "
            f"{', '.join(contract.ACTIVATIONS)}; {EXPORT_HINT}"
        )
    if card.score not in contract.SCORES:
        raise ModelError(
            f"{path}: metadata {contract.META_SCORE} is {card.score!r}, not one of {', '.join(contract.SCORES)}; "
            f"{EXPORT_HINT}"
        )
    _check_signature(card, session)
    return card


def _field(key: str) -> str:
    return key.removeprefix("onnxcam.")


def _json(path: str, metadata: dict[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError:
        raise ModelError(f"{path}: metadata {key} is not valid JSON") from None


def _text(path: str, metadata: dict[str, str], key: str) -> str:
    if not metadata[key].strip():
        raise ModelError(f"{path}: metadata {key} is empty")
    return metadata[key]


def _json_object(path: str, metadata: dict[str, str], key: str) -> dict[str, Any]:
    value = _json(path, metadata, key)
    if not isinstance(value, dict):
        raise ModelError(f"{path}: metadata {key} must be a JSON object")
    return value


def _labels(path: str, metadata: dict[str, str]) -> tuple[str, ...]:
    labels = _json(path, metadata, contract.META_LABELS)
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelError(f"{path}: metadata {contract.META_LABELS} must be a non-empty JSON list of strings")
    return tuple(labels)


def _input_size(path: str, metadata: dict[str, str]) -> tuple[int, int]:
    size = _json(path, metadata, contract.META_INPUT_SIZE)
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in size)
    ):
        raise ModelError(f"{path}: metadata {contract.META_INPUT_SIZE} must be a JSON list [height, width]")
    return size[0], size[1]


def _layers(path: str, metadata: dict[str, str]) -> tuple[str, ...]:
    layers = _json(path, metadata, contract.META_LAYERS)
    if (
        not isinstance(layers, list)
        or not layers
        or not all(isinstance(x, str) and x.strip() for x in layers)
    ):
        raise ModelError(
            f"{path}: metadata {contract.META_LAYERS} must be a non-empty JSON list of layer names"
        )
    if layers[0] != metadata[contract.META_LAYER]:
        raise ModelError(
            f"{path}: metadata {contract.META_LAYERS} starts with {layers[0]!r}, "
            f"not {contract.META_LAYER} {metadata[contract.META_LAYER]!r}"
        )
    return tuple(layers)


def _check_signature(card: ModelCard, session: ort.InferenceSession) -> None:
    """The graph's inputs and outputs must be those the contract names, with matching sizes."""
    inputs = {node.name: node for node in session.get_inputs()}
    outputs = {node.name: node for node in session.get_outputs()}
    expected_inputs = (contract.INPUT_IMAGE, contract.INPUT_CLASS_INDEX)
    missing = [name for name in expected_inputs if name not in inputs]
    expected_outputs = contract.OUTPUTS + tuple(
        contract.layer_output(name, i) for i in range(1, len(card.layers)) for name in contract.LAYER_OUTPUTS
    )
    missing += [name for name in expected_outputs if name not in outputs]
    if missing:
        raise ModelError(
            f"{card.path}: not an onnxcam model (graph lacks {', '.join(missing)}); {EXPORT_HINT}"
        )
    image = inputs[contract.INPUT_IMAGE]
    if image.type != "tensor(float)" or len(image.shape) != 4 or image.shape[3] != 3:
        raise ModelError(
            f"{card.path}: input {contract.INPUT_IMAGE} must be float32 [N, H, W, 3], "
            f"not {image.type} {image.shape}"
        )
    if isinstance(image.shape[0], int):
        raise ModelError(
            f"{card.path}: input {contract.INPUT_IMAGE} has a fixed batch size {image.shape[0]}; "
            "it must be dynamic"
        )
    height, width = image.shape[1:3]
    if all(isinstance(x, int) for x in (height, width)) and (height, width) != card.input_size:
        raise ModelError(
            f"{card.path}: input {contract.INPUT_IMAGE} is {height}x{width} "
            f"but metadata says {card.input_size[0]}x{card.input_size[1]}"
        )
    if inputs[contract.INPUT_CLASS_INDEX].type != "tensor(int64)":
        raise ModelError(f"{card.path}: input {contract.INPUT_CLASS_INDEX} must be int64")
    classes = outputs[contract.OUTPUT_PROBABILITIES].shape[-1]
    if isinstance(classes, int) and classes != card.num_classes:
        raise ModelError(f"{card.path}: {classes} output classes but {card.num_classes} labels in metadata")


def file_sha256(path: str) -> str:
    """The sha256 of a model file, as `sha256sum` prints it (the file's identity: the service's
    `file_sha256`, the batch job's resume check, evaluate's report); ModelError if unreadable."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise ModelError(f"{path}: cannot read the model ({error.strerror or error})") from None
    return digest.hexdigest()

"""The model card: the metadata every onnxcam file carries (names from `contract`), for both paths."""

from __future__ import annotations

import json
from importlib import metadata

import onnx

from . import contract


def model_card(*, model: str, labels: list[str], input_size: tuple[int, int], preprocessing: str,
               layers: list[str], score: str, activation: str, weights: dict, versions: dict,
               self_check: dict) -> dict[str, str]:
    """The metadata properties; `versions` lists the path's own libraries (onnxcam's and onnx's are added)."""
    return {
        contract.META_FORMAT: contract.FORMAT,
        contract.META_MODEL: model,
        contract.META_LABELS: json.dumps(labels),
        contract.META_INPUT_SIZE: json.dumps(list(input_size)),
        contract.META_PREPROCESSING: preprocessing,
        contract.META_LAYER: layers[0],
        contract.META_LAYERS: json.dumps(layers),
        contract.META_SCORE: score,
        contract.META_ACTIVATION: activation,
        contract.META_WEIGHTS: json.dumps(weights),
        contract.META_VERSIONS: json.dumps({"onnxcam": package_version("onnxcam"), "onnx": onnx.__version__,
                                            **versions}),
        contract.META_SELF_CHECK: json.dumps(self_check),
    }


def package_version(distribution: str) -> str:
    """The installed version of `distribution`, or a note that it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"

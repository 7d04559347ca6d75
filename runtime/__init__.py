"""onnxcam runtime: Grad-CAM heatmaps from one exported .onnx file, with onnxruntime only.

The names below load on first use (PEP 562), so that `python -m runtime` imports numpy,
onnxruntime and OpenCV inside its own Ctrl-C handler, not before it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import ImageError, ModelError, OnnxcamError, UsageError

if TYPE_CHECKING:
    from .explainer import Explainer
    from .images import DEFAULT_MAX_PIXELS
    from .methods import METHODS
    from .model_card import ModelCard
    from .results import ClassMap, Explanation, Outcome, Prediction
    from .targets import Targets

_LAZY = {
    "DEFAULT_MAX_PIXELS": ".images",
    "METHODS": ".methods",
    "ClassMap": ".results",
    "Explainer": ".explainer",
    "Explanation": ".results",
    "ModelCard": ".model_card",
    "Outcome": ".results",
    "Prediction": ".results",
    "Targets": ".targets",
}

__all__ = sorted([*_LAZY, "ImageError", "ModelError", "OnnxcamError", "UsageError"])


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value

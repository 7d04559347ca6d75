"""onnxcam runtime: Grad-CAM heatmaps from one exported .onnx file, with onnxruntime only."""

from .errors import ImageError, ModelError, OnnxcamError, UsageError
from .explainer import Explainer
from .images import DEFAULT_MAX_PIXELS
from .methods import METHODS
from .model_card import ModelCard
from .results import ClassMap, Explanation, Outcome, Prediction

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "METHODS",
    "ClassMap",
    "Explainer",
    "Explanation",
    "ImageError",
    "ModelCard",
    "ModelError",
    "OnnxcamError",
    "Outcome",
    "Prediction",
    "UsageError",
]

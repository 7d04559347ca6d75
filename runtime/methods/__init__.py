"""CAM methods by name. A new method is a small class here: see base.WeightedCam."""

from .base import DEFAULT_MAX_CHANNELS, CamMethod, LayerInputs, Options, WeightedCam, first_component
from .eigencam import EigenCam
from .gradcam import GradCam
from .gradcam_plus_plus import GradCamPlusPlus
from .hirescam import HiResCam
from .layercam import LayerCam
from .scorecam import ScoreCam
from .xgradcam import XGradCam

METHODS: dict[str, type[CamMethod]] = {
    method.name: method
    for method in (GradCam, GradCamPlusPlus, XGradCam, HiResCam, LayerCam, EigenCam, ScoreCam)
}

__all__ = [
    "DEFAULT_MAX_CHANNELS",
    "METHODS",
    "CamMethod",
    "EigenCam",
    "GradCam",
    "GradCamPlusPlus",
    "HiResCam",
    "LayerCam",
    "LayerInputs",
    "Options",
    "ScoreCam",
    "WeightedCam",
    "XGradCam",
    "first_component",
]

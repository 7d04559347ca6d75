"""CAM methods by name. A new method is a small class here: see base.WeightedCam."""

from .base import CamMethod, WeightedCam
from .gradcam import GradCam
from .gradcam_plus_plus import GradCamPlusPlus
from .hirescam import HiResCam
from .layercam import LayerCam
from .xgradcam import XGradCam

METHODS: dict[str, type[CamMethod]] = {
    method.name: method for method in (GradCam, GradCamPlusPlus, XGradCam, HiResCam, LayerCam)
}

__all__ = [
    "METHODS",
    "CamMethod",
    "WeightedCam",
    "GradCam",
    "GradCamPlusPlus",
    "XGradCam",
    "HiResCam",
    "LayerCam",
]

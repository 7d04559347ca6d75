"""CAM methods by name. A new method is a small class here: see base.WeightedCam."""

from .ablationcam import AblationCam
from .averaged_scorecam import IsCam, SsCam
from .base import DEFAULT_MAX_CHANNELS, CamMethod, LayerInputs, Options, WeightedCam, first_component
from .cam import Cam
from .eigencam import EigenCam
from .eigengradcam import EigenGradCam
from .fem import Fem
from .finercam import FinerCam
from .gradcam import GradCam
from .gradcam_elementwise import GradCamElementWise
from .gradcam_plus_plus import GradCamPlusPlus
from .hirescam import HiResCam
from .kpcacam import KpcaCam
from .layercam import LayerCam
from .scorecam import ScoreCam
from .smooth_gradcam_plus_plus import SmoothGradCamPlusPlus
from .xgradcam import XGradCam

METHODS: dict[str, type[CamMethod]] = {
    method.name: method
    for method in (
        GradCam,
        GradCamPlusPlus,
        XGradCam,
        HiResCam,
        LayerCam,
        EigenCam,
        ScoreCam,
        Cam,
        GradCamElementWise,
        EigenGradCam,
        KpcaCam,
        Fem,
        FinerCam,
        AblationCam,
        SsCam,
        IsCam,
        SmoothGradCamPlusPlus,
    )
}

__all__ = [
    "DEFAULT_MAX_CHANNELS",
    "METHODS",
    "AblationCam",
    "Cam",
    "CamMethod",
    "EigenCam",
    "EigenGradCam",
    "Fem",
    "FinerCam",
    "GradCam",
    "GradCamElementWise",
    "GradCamPlusPlus",
    "HiResCam",
    "IsCam",
    "KpcaCam",
    "LayerCam",
    "LayerInputs",
    "Options",
    "ScoreCam",
    "SmoothGradCamPlusPlus",
    "SsCam",
    "WeightedCam",
    "XGradCam",
    "first_component",
]

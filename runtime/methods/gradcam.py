"""Grad-CAM (Selvaraju et al., 2017): ReLU(sum_c mean_hw(gradients) * feature_maps)."""

import numpy as np

from .. import contract
from .base import CamMethod, Outputs


class GradCam(CamMethod):
    """Reads the graph's own `cam` output: no feature maps or gradients cross into Python."""

    name = "gradcam"
    required_outputs = (contract.OUTPUT_CAM,)

    def raw_maps(self, outputs: Outputs) -> np.ndarray:
        return outputs[contract.OUTPUT_CAM].astype(np.float32, copy=False)

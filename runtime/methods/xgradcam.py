"""XGrad-CAM (Fu et al., 2020): weights_c = sum_hw(g * A_c) / sum_hw(A_c)."""

import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam

EPS = 1e-7


class XGradCam(WeightedCam):
    name = "xgradcam"

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        gradients = layer.outputs[contract.OUTPUT_GRADIENTS]  # [N, K, h, w, C]
        feature_maps = layer.outputs[contract.OUTPUT_FEATURE_MAPS]  # [N, h, w, C]
        weighted = np.einsum("nkhwc,nhwc->nkc", gradients, feature_maps)
        return weighted / (feature_maps.sum(axis=(1, 2))[:, None, :] + EPS)

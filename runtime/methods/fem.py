"""FEM, the Feature Explanation Method (Fuad et al., 2020), as pytorch-grad-cam's FEM:
ReLU(sum_c w_c A_c) with w_c the share of channel c's positions above its k-sigma threshold
mean_hw(A_c) + K_SIGMA * std_hw(A_c). No gradients: every class gets the same map."""

import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam

K_SIGMA = 2  # pytorch-grad-cam's default k


class Fem(WeightedCam):
    name = "fem"
    layer_outputs = (contract.OUTPUT_FEATURE_MAPS,)

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        feature_maps = layer.outputs[contract.OUTPUT_FEATURE_MAPS]  # [N, h, w, C]
        threshold = feature_maps.mean(axis=(1, 2)) + K_SIGMA * feature_maps.std(axis=(1, 2))  # [N, C]
        weights = (feature_maps > threshold[:, None, None]).mean(axis=(1, 2), dtype=np.float32)
        classes = layer.outputs[contract.OUTPUT_EXPLAINED_CLASS].shape[1]
        return np.repeat(weights[:, None], classes, axis=1)

"""Eigen-CAM (Muhammad & Yeasin, 2020): ReLU(the activations projected on their first principal
component), as pytorch-grad-cam computes it but with a fixed sign (see first_component). No
gradients: every class gets the same map."""

import numpy as np

from .. import contract
from .base import CamMethod, LayerInputs, first_component


class EigenCam(CamMethod):
    name = "eigencam"
    layer_outputs = (contract.OUTPUT_FEATURE_MAPS,)

    def raw_maps(self, layer: LayerInputs) -> np.ndarray:
        maps = np.maximum(first_component(layer.outputs[contract.OUTPUT_FEATURE_MAPS]), 0)  # [N, h, w]
        classes = layer.outputs[contract.OUTPUT_EXPLAINED_CLASS].shape[1]
        return np.repeat(maps[:, None], classes, axis=1)

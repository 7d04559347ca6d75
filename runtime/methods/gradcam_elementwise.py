"""Grad-CAM element-wise (pytorch-grad-cam's GradCAMElementWise): ReLU(sum_c ReLU(g * A_c)),
position by position: HiResCAM with each channel's product clipped at 0 before the sum."""

import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam


class GradCamElementWise(WeightedCam):
    name = "gradcamelementwise"

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        return layer.outputs[contract.OUTPUT_GRADIENTS]

    def weighted_activations(self, layer: LayerInputs) -> np.ndarray:
        return np.maximum(super().weighted_activations(layer), 0)

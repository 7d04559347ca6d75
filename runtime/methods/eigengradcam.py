"""Eigen-Grad-CAM (pytorch-grad-cam's EigenGradCAM): ReLU(the first principal component of g * A),
position by position, whatever eigen_smooth says. The component's sign is chosen as Eigen-CAM's
(see base.first_component); pytorch-grad-cam keeps the SVD's arbitrary sign."""

import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam, first_component


class EigenGradCam(WeightedCam):
    name = "eigengradcam"

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        return layer.outputs[contract.OUTPUT_GRADIENTS]

    def raw_maps(self, layer: LayerInputs) -> np.ndarray:
        return np.maximum(first_component(self.weighted_activations(layer)), 0).astype(np.float32)

"""Eigen-CAM (Muhammad & Yeasin, 2020): ReLU(the activations projected on their first principal
component), as pytorch-grad-cam computes it but with a deliberate sign (see first_component). No
gradients: every class gets the same map.

The sign is where onnxcam differs from pytorch-grad-cam on purpose: pytorch-grad-cam keeps the
SVD's arbitrary sign, so on a 2x2 grid of four photos its map and this one are opposite (r = -0.68)
and on torchvision's convnext_tiny r = -0.66; here the component agrees with the activations'
magnitude, so the map lights up where the layer is active."""

import numpy as np

from .. import contract
from .base import CamMethod, LayerInputs, first_component, same_for_every_class


class EigenCam(CamMethod):
    name = "eigencam"
    layer_outputs = (contract.OUTPUT_FEATURE_MAPS,)

    def raw_maps(self, layer: LayerInputs) -> np.ndarray:
        maps = np.maximum(first_component(layer.outputs[contract.OUTPUT_FEATURE_MAPS]), 0)  # [N, h, w]
        return same_for_every_class(maps, layer)

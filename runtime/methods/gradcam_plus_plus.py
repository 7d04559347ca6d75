"""Grad-CAM++ (Chattopadhyay et al., 2018), with the exponential-score closed form of
pytorch-grad-cam: weights_c = sum_hw ReLU(g) * g^2 / (2 g^2 + sum_hw(A_c) g^3 + EPS).

EPS is pytorch-grad-cam's 1e-6. It is not negligible: where gradients are small (a random-weight
model, or a wide layer far from the logits) g^2 is of the order of EPS, and 1e-7 instead of 1e-6
changed the map (r = 0.90 against pytorch-grad-cam on torchvision's convnext_tiny)."""

import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam

EPS = 1e-6  # pytorch-grad-cam's (1e-7 gave r 0.9984 on a ViT, whose gradients are small)


class GradCamPlusPlus(WeightedCam):
    name = "gradcam++"

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        gradients = layer.outputs[contract.OUTPUT_GRADIENTS]  # [N, K, h, w, C]
        feature_maps = layer.outputs[contract.OUTPUT_FEATURE_MAPS]
        return plus_plus_weights(gradients, gradients**2, gradients**3, feature_maps, EPS)


def plus_plus_weights(
    gradients: np.ndarray, squared: np.ndarray, cubed: np.ndarray, feature_maps: np.ndarray, eps: float
) -> np.ndarray:
    """[N, K, C]: sum_hw ReLU(gradients) * alpha, alpha = squared / (2 squared + sum_hw(A) cubed + eps)
    and 0 where the gradient is 0. gradients, squared, cubed [N, K, h, w, C] (Smooth Grad-CAM++
    gives averages over noisy inputs), feature_maps [N, h, w, C]."""
    activation_sums = feature_maps.sum(axis=(1, 2))[:, None, None, None, :]
    alpha = squared / (2 * squared + activation_sums * cubed + eps)
    alpha = np.where(gradients != 0, alpha, 0)
    return (np.maximum(gradients, 0) * alpha).sum(axis=(2, 3))

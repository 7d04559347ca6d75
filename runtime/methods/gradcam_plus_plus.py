"""Grad-CAM++ (Chattopadhyay et al., 2018), with the exponential-score closed form of
pytorch-grad-cam: weights_c = sum_hw ReLU(g) * g^2 / (2 g^2 + sum_hw(A_c) g^3)."""

import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam

EPS = 1e-6  # pytorch-grad-cam's (1e-7 gave r 0.9984 on a ViT, whose gradients are small)


class GradCamPlusPlus(WeightedCam):
    name = "gradcam++"

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        gradients = layer.outputs[contract.OUTPUT_GRADIENTS]  # [N, K, h, w, C]
        activation_sums = layer.outputs[contract.OUTPUT_FEATURE_MAPS].sum(axis=(1, 2))  # [N, C]
        squared = gradients**2
        alpha = squared / (2 * squared + activation_sums[:, None, None, None, :] * squared * gradients + EPS)
        alpha = np.where(gradients != 0, alpha, 0)
        return (np.maximum(gradients, 0) * alpha).sum(axis=(2, 3))

"""Smooth Grad-CAM++ (Omeiza et al., 2019): Grad-CAM++ whose derivatives are averaged over
`SAMPLES` copies of the image with Gaussian noise: alpha = E[g^2] / (2 E[g^2] + sum_hw(A) E[g^3]),
weights_c = sum_hw ReLU(E[g]) alpha (gradcam_plus_plus.plus_plus_weights), A the noise-free
activations, EPS torchcam's 1e-8. With no noise it is Grad-CAM++ with that constant.

The noise (std NOISE_STD on the raw 0..255 pixels, not clipped) is drawn from numpy's
default_rng(options.seed): one [N, H, W, 3] draw per sample, in order. Cost: SAMPLES more runs of
the model with gradients per batch. torchcam's SmoothGradCAMpp differs in three ways: it sums
E[g^3] * A over positions (the paper's sum_hw(A) E[g^3] here, as Grad-CAM++), it takes ReLU of the
last noisy sample's gradient rather than of their mean, and it does not zero alpha where g = 0."""

import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam
from .gradcam_plus_plus import plus_plus_weights

SAMPLES = 4  # torchcam's num_samples
EPS = 1e-8  # torchcam's, in alpha's denominator (pytorch-grad-cam's Grad-CAM++: 1e-6)
NOISE_STD = 0.3 * 0.226 * 255  # torchcam's std 0.3 on a torchvision-normalised input (std ~0.226), in pixels


class SmoothGradCamPlusPlus(WeightedCam):
    name = "smoothgradcam++"

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        rng = np.random.default_rng(self.options.seed)
        explained = layer.outputs[contract.OUTPUT_EXPLAINED_CLASS]
        moments = [0.0, 0.0, 0.0]  # sums of g, g^2, g^3
        for _ in range(SAMPLES):
            noisy = layer.images + rng.normal(0, NOISE_STD, layer.images.shape).astype(np.float32)
            gradients = layer.run(noisy, explained, (contract.OUTPUT_GRADIENTS,))[contract.OUTPUT_GRADIENTS]
            for power in range(3):
                moments[power] = moments[power] + gradients.astype(np.float64) ** (power + 1)
        mean, squared, cubed = (moment / SAMPLES for moment in moments)
        return plus_plus_weights(mean, squared, cubed, layer.outputs[contract.OUTPUT_FEATURE_MAPS], EPS)

"""KPCA-CAM (Karmani et al., 2024), as pytorch-grad-cam's KPCA_CAM with its defaults: the
activations (positions x channels, centred per channel) projected on their first kernel principal
component, with scikit-learn KernelPCA's defaults: the sigmoid kernel tanh(x.y / C + 1) (gamma =
1 / C channels, coef0 = 1), the kernel centred, the projection = eigenvector * sqrt(eigenvalue).
The sign is Eigen-CAM's (base.signed_like: agreeing with the activations' magnitude), where
scikit-learn makes the eigenvector's largest entry positive. No gradients: every class gets the
same map. Cost: an eigendecomposition of a (h w) x (h w) matrix per image."""

import numpy as np

from .. import contract
from .base import CamMethod, LayerInputs, same_for_every_class, signed_like


class KpcaCam(CamMethod):
    name = "kpcacam"
    layer_outputs = (contract.OUTPUT_FEATURE_MAPS,)

    def raw_maps(self, layer: LayerInputs) -> np.ndarray:
        maps = np.maximum(first_kernel_component(layer.outputs[contract.OUTPUT_FEATURE_MAPS]), 0)
        return same_for_every_class(maps, layer)


def first_kernel_component(activations: np.ndarray) -> np.ndarray:
    """[N, h, w, C] -> [N, h, w]: each image's projection on its first kernel principal component."""
    count, height, width, channels = activations.shape
    flat = activations.reshape(count, height * width, channels).astype(np.float64)
    centred = flat - flat.mean(axis=1, keepdims=True)
    kernel = np.tanh(centred @ centred.transpose(0, 2, 1) / channels + 1)
    kernel = (
        kernel
        - kernel.mean(axis=1, keepdims=True)
        - kernel.mean(axis=2, keepdims=True)
        + kernel.mean(axis=(1, 2), keepdims=True)
    )
    values, vectors = np.linalg.eigh(kernel)
    projection = vectors[..., -1] * np.sqrt(np.maximum(values[:, -1:], 0))
    return signed_like(projection, flat).reshape(count, height, width).astype(np.float32)

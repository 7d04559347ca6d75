"""Grad-CAM (Selvaraju et al., 2017): ReLU(sum_c mean_hw(gradients) * feature_maps)."""

import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam


class GradCam(WeightedCam):
    """Reads the graph's own `cam`: no feature maps or gradients cross into Python. Only
    eigen_smooth needs the feature maps, with the pooled gradients (C floats per class)."""

    name = "gradcam"

    @property
    def layer_outputs(self) -> tuple[str, ...]:
        if self.options.eigen_smooth:
            return (contract.OUTPUT_FEATURE_MAPS, contract.OUTPUT_POOLED_GRADIENTS)
        return (contract.OUTPUT_CAM,)

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        return layer.outputs[contract.OUTPUT_POOLED_GRADIENTS]

    def raw_maps(self, layer: LayerInputs) -> np.ndarray:
        if self.options.eigen_smooth:
            return super().raw_maps(layer)
        return layer.outputs[contract.OUTPUT_CAM].astype(np.float32, copy=False)

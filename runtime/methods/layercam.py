"""LayerCAM (Jiang et al., 2021): ReLU(sum_c ReLU(g) * A_c), position by position."""

import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam


class LayerCam(WeightedCam):
    name = "layercam"

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        return np.maximum(layer.outputs[contract.OUTPUT_GRADIENTS], 0)

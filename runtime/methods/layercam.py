"""LayerCAM (Jiang et al., 2021): ReLU(sum_c ReLU(g) * A_c), position by position."""

import numpy as np

from .. import contract
from .base import Outputs, WeightedCam


class LayerCam(WeightedCam):
    name = "layercam"

    def cam_weights(self, outputs: Outputs) -> np.ndarray:
        return np.maximum(outputs[contract.OUTPUT_GRADIENTS], 0)

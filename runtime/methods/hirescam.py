"""HiResCAM (Draelos & Carin, 2020): ReLU(sum_c g * A_c), position by position."""

import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam


class HiResCam(WeightedCam):
    name = "hirescam"

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        return layer.outputs[contract.OUTPUT_GRADIENTS]

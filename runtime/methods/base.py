"""The shared shape of a CAM method: which outputs it fetches, and how they become raw maps.

After pytorch-grad-cam's `get_cam_weights`: most methods only say how they weigh the channels
of the feature maps; `WeightedCam` does the rest.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from .. import contract

Outputs = Mapping[str, np.ndarray]


class CamMethod(ABC):
    """Turns the fetched ONNX outputs into raw (not normalised) maps [N, K, h, w]."""

    name: ClassVar[str]
    required_outputs: ClassVar[tuple[str, ...]]  # ONNX outputs to fetch, besides the predictions

    @abstractmethod
    def raw_maps(self, outputs: Outputs) -> np.ndarray:
        """Raw maps [N, K, h, w], float32, >= 0."""


class WeightedCam(CamMethod):
    """ReLU(sum_c weights * feature_maps). Subclasses give the weights: [N, K, C] for one weight
    per channel, or [N, K, h, w, C] for one weight per channel and position."""

    required_outputs = (contract.OUTPUT_FEATURE_MAPS, contract.OUTPUT_GRADIENTS)

    @abstractmethod
    def cam_weights(self, outputs: Outputs) -> np.ndarray:
        """[N, K, C] or [N, K, h, w, C]."""

    def raw_maps(self, outputs: Outputs) -> np.ndarray:
        weights = self.cam_weights(outputs)
        feature_maps = outputs[contract.OUTPUT_FEATURE_MAPS]
        pattern = "nkc,nhwc->nkhw" if weights.ndim == 3 else "nkhwc,nhwc->nkhw"
        return np.maximum(np.einsum(pattern, weights, feature_maps), 0).astype(np.float32)

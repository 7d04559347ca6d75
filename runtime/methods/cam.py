"""CAM (Zhou et al., 2016): ReLU(sum_c W[class, c] A_c), W the class weights of a global average
pooling + linear head.

For such a head the gradient of a logit with respect to the layer is W[class] / (h w) at every
position, so the contract already gives W: h w times the gradients (no addition to the file). CAM
is then Grad-CAM times h w: the same map once normalised. Refused in one line where that does not
hold: when the model's differentiated score is the probability, and when the gradients vary over
positions (the layer is not followed by pooling + linear; a pooling + MLP head cannot be told from
its gradients, whose CAM is then Grad-CAM). torchcam's CAM keeps the map's negative part (no
ReLU); here, as in every method, ReLU."""

import numpy as np

from .. import contract
from ..errors import UsageError
from ..model_card import ModelCard
from .base import LayerInputs, WeightedCam

# The most a gradient may differ from the first position's, relative to the largest gradient: a
# pooling + linear head's are exactly equal, up to float32 rounding.
POSITION_TOLERANCE = 1e-4


class Cam(WeightedCam):
    name = "cam"

    def check(self, card: ModelCard) -> None:
        check_logit_score(card, self.name)

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        height, width = layer.outputs[contract.OUTPUT_FEATURE_MAPS].shape[1:3]
        return linear_head_gradients(layer, self.name) * (height * width)


def check_logit_score(card: ModelCard, method: str) -> None:
    if card.score != "logit":
        raise UsageError(
            f"method {method}: needs a global average pooling + linear head's logit, and this model's "
            f"score is the {card.score}; export it with --score logit or use gradcam"
        )


def linear_head_gradients(layer: LayerInputs, method: str) -> np.ndarray:
    """[N, K, C]: the gradients, which must be the same at every position (pooling + linear)."""
    gradients = layer.outputs[contract.OUTPUT_GRADIENTS]  # [N, K, h, w, C]
    spread = np.abs(gradients - gradients[:, :, :1, :1]).max(initial=0)
    if spread > POSITION_TOLERANCE * np.abs(gradients).max(initial=0):
        raise UsageError(
            f"method {method}: this layer's gradients vary over positions, so the head after it is not "
            "global average pooling + linear; use gradcam (or scorecam)"
        )
    return gradients[:, :, 0, 0]

"""Ablation-CAM (Desai & Ramaswamy, 2020): weights_c = (y - y_c) / y, y the class's score and y_c
the score with channel c of the layer set to 0.

pytorch-grad-cam re-runs the network after the layer once per channel (C runs per image: 2048 on
ResNet50's last block). For a global average pooling + linear head the drop has a closed form,
y - y_c = W[class, c] mean_hw(A_c) = sum_hw(g_c A_c), so here it costs no run per channel; y comes
from one more model run per image (predictions only). Any other head is refused in one line (see
cam.linear_head_gradients): it would need C re-runs of the part after the layer, which the file
does not hold apart from the whole model. pytorch-grad-cam zeroes the channel only where the
layer's minimum is 0 (after a ReLU); elsewhere it sets it to min - 1e7, a different measure; here
it is always 0, as in the paper."""

import numpy as np

from .. import contract
from ..model_card import ModelCard
from .base import LayerInputs, WeightedCam
from .cam import check_logit_score, linear_head_gradients


class AblationCam(WeightedCam):
    name = "ablationcam"

    def check(self, card: ModelCard) -> None:
        check_logit_score(card, self.name)

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        gradients = linear_head_gradients(layer, self.name)  # [N, K, C]
        drops = gradients * layer.outputs[contract.OUTPUT_FEATURE_MAPS].sum(axis=(1, 2))[:, None]
        scores = layer.run(layer.images, layer.outputs[contract.OUTPUT_EXPLAINED_CLASS])[contract.OUTPUT_SCORE]
        return drops / scores[..., None]

"""Finer-CAM (Zhang et al., 2025), as torchcam's FinerCAM over Grad-CAM: the Grad-CAM of the
contrastive score y_c - GAMMA * mean_t(y_t), t the REFERENCES classes whose logits are closest to
y_c (the class itself excluded). Its gradient is the same combination of the classes' gradients,
which one more run of the model gives (class_index [c, t1, t2, t3] per explained class; more runs
only where that makes more columns than the model has classes).

The references are found from the probabilities: under a softmax, log-probabilities differ as the
logits do. pytorch-grad-cam's FinerCAM weighs the references by their softmax probabilities and
differentiates through them (alpha = 1): a score whose gradient needs every class's, which the
file does not give cheaply; this is torchcam's."""

import numpy as np

from .. import contract
from ..errors import UsageError
from ..model_card import ModelCard
from .base import LayerInputs, WeightedCam

GAMMA = 0.6  # torchcam's comparison strength
REFERENCES = 3  # torchcam's number of references


class FinerCam(WeightedCam):
    name = "finercam"
    layer_outputs = (contract.OUTPUT_FEATURE_MAPS,)

    def check(self, card: ModelCard) -> None:
        if card.activation != "softmax" or card.num_classes < 2:
            raise UsageError(
                f"method {self.name}: needs a softmax over at least 2 classes to find the closest classes "
                f"(this model has {card.num_classes}, {card.activation}); use gradcam"
            )

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        explained = layer.outputs[contract.OUTPUT_EXPLAINED_CLASS]  # [N, K]
        references = closest_classes(layer.outputs[contract.OUTPUT_PROBABILITIES], explained, REFERENCES)
        classes = np.concatenate([explained[..., None], references], axis=-1)  # [N, K, 1 + T]
        count, explained_count, per_class = classes.shape
        columns = classes.reshape(count, -1)
        # a run takes at most as many classes as the model has (the graph's top-k over class_index)
        most = layer.outputs[contract.OUTPUT_PROBABILITIES].shape[1]
        pooled = np.concatenate([
            layer.run(layer.images, part, (contract.OUTPUT_POOLED_GRADIENTS,))[contract.OUTPUT_POOLED_GRADIENTS]
            for part in np.array_split(columns, -(-columns.shape[1] // most), axis=1)
        ], axis=1).reshape(count, explained_count, per_class, -1)
        return pooled[:, :, 0] - GAMMA * pooled[:, :, 1:].mean(axis=2)


def closest_classes(probabilities: np.ndarray, explained: np.ndarray, count: int) -> np.ndarray:
    """[N, K, min(count, classes - 1)]: per explained class, the other classes whose logits are
    closest to its own, nearest first (ties: the lower index)."""
    with np.errstate(divide="ignore"):
        logits = np.log(probabilities.astype(np.float64))
    own = np.take_along_axis(logits, explained, axis=1)[..., None]  # [N, K, 1]
    distance = np.abs(logits[:, None, :] - own)
    distance[np.isnan(distance)] = np.inf  # two classes of probability 0: -inf - -inf
    np.put_along_axis(distance, explained[..., None], -1.0, axis=-1)  # the class itself sorts first
    order = np.argsort(distance, axis=-1, kind="stable")
    return order[..., 1 : 1 + min(count, probabilities.shape[1] - 1)]

"""Score-CAM (Wang et al., 2020), as pytorch-grad-cam computes it: no gradients; each channel's
activation map, upsampled to the model input and min-max normalised, masks the input image; the
class's score on each masked image, softmaxed over the channels, weighs that channel.

The mask multiplies the raw 0..255 RGB image (the graph does its own preprocessing afterwards), so
masked-out pixels turn black: not the dataset mean that masking a normalised tensor gives in
pytorch-grad-cam. The score is the model's differentiated score (`onnxcam.score`: the logit by
default, as pytorch-grad-cam's ClassifierOutputTarget).

Cost: one forward pass per channel and image (2048 on ResNet50's last block), in runs of at most
batch_size images. Only the `max_channels` channels of highest mean activation are re-run (default
256); the others get weight 0.
"""

import cv2
import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam

MASK_EPS = 1e-8


class ScoreCam(WeightedCam):
    name = "scorecam"
    layer_outputs = (contract.OUTPUT_FEATURE_MAPS,)

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        feature_maps = layer.outputs[contract.OUTPUT_FEATURE_MAPS]  # [N, h, w, C]
        classes = layer.outputs[contract.OUTPUT_EXPLAINED_CLASS]  # [N, K]
        weights = np.zeros((len(feature_maps), classes.shape[1], feature_maps.shape[-1]), np.float32)
        for n, (activations, image) in enumerate(zip(feature_maps, layer.images, strict=True)):
            order = np.argsort(-activations.mean(axis=(0, 1)), kind="stable")
            chosen = order[: self.options.max_channels]
            scores = np.concatenate(
                [
                    self._scores(layer, activations[..., part], image, classes[n])
                    for part in np.array_split(chosen, -(-len(chosen) // layer.batch_size))
                ]
            )  # [channels, K]
            exponentials = np.exp(scores - scores.max(axis=0))
            weights[n][:, chosen] = (exponentials / exponentials.sum(axis=0)).T
        return weights

    @staticmethod
    def _scores(
        layer: LayerInputs, activations: np.ndarray, image: np.ndarray, classes: np.ndarray
    ) -> np.ndarray:
        """The score of `classes` on `image` masked by each channel of `activations` [h, w, c]."""
        masks = np.stack(
            [upsampled_mask(channel, image.shape[:2]) for channel in np.moveaxis(activations, -1, 0)]
        )
        masked = image[None] * masks[..., None]
        return layer.run(masked, np.tile(classes, (len(masks), 1)))[contract.OUTPUT_SCORE]


def upsampled_mask(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One channel's activation map, bilinear (cv2.INTER_LINEAR) to `size`, min-max to 0..1."""
    height, width = size
    upsampled = cv2.resize(channel.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    low = upsampled.min()
    return (upsampled - low) / (upsampled.max() - low + MASK_EPS)

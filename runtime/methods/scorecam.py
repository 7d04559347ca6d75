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
                    masked_scores(layer, channel_masks(activations[..., part], image.shape[:2]), image, classes[n])
                    for part in np.array_split(chosen, -(-len(chosen) // layer.batch_size))
                ]
            )  # [channels, K]
            weights[n][:, chosen] = channel_softmax(scores)
        return weights


def channel_softmax(scores: np.ndarray) -> np.ndarray:
    """[c, K] scores -> [K, c]: each class's softmax over the channels."""
    exponentials = np.exp(scores - scores.max(axis=0))
    return (exponentials / exponentials.sum(axis=0)).T


def masked_scores(layer: LayerInputs, masks: np.ndarray, image: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """[c, K]: the score of `classes` on `image` [H, W, 3] times each of `masks` [c, H, W], in
    runs of at most layer.batch_size images."""
    parts = np.array_split(np.arange(len(masks)), -(-len(masks) // layer.batch_size))
    return np.concatenate([
        layer.run(image[None] * masks[part][..., None], np.tile(classes, (len(part), 1)))[contract.OUTPUT_SCORE]
        for part in parts
    ])


def channel_masks(activations: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[c, H, W]: upsampled_mask of each channel of activations [h, w, c]."""
    return np.stack([upsampled_mask(channel, size) for channel in np.moveaxis(activations, -1, 0)])


def upsampled_mask(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One channel's activation map, bilinear (cv2.INTER_LINEAR) to `size`, min-max to 0..1."""
    height, width = size
    upsampled = cv2.resize(channel.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    low = upsampled.min()
    return (upsampled - low) / (upsampled.max() - low + MASK_EPS)

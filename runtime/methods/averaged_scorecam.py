"""SS-CAM (Wang et al., 2020) and IS-CAM (Naidu et al., 2020), as torchcam computes them: Score-CAM
whose channel scores are averaged over `samples` masked inputs. Unlike Score-CAM (pytorch-grad-cam's),
each chosen channel's map is min-max normalised at the layer's resolution, then upsampled bilinearly
(cv2.INTER_LINEAR: align_corners=False, as torchcam); weights = each class's softmax over the
channels of the mean score; map = ReLU(sum_c weights * A_c).

The masks multiply the raw 0..255 RGB image (masked-out pixels turn black, see scorecam). Only the
`max_channels` channels of highest mean activation are used (torchcam uses all): samples x channels
model runs per image (SS-CAM's default: 35 x 256 = 8960), in runs of at most batch_size images.
"""

from abc import abstractmethod
from typing import ClassVar

import cv2
import numpy as np

from .. import contract
from .base import LayerInputs, WeightedCam
from .scorecam import MASK_EPS, channel_softmax, masked_scores

SSCAM_SAMPLES = 35  # torchcam's num_samples
SSCAM_STD = 2.0  # torchcam's std: of the noise added to each 0..1 mask
ISCAM_SAMPLES = 10  # torchcam's num_samples


class AveragedScoreCam(WeightedCam):
    layer_outputs = (contract.OUTPUT_FEATURE_MAPS,)
    samples: ClassVar[int]

    @abstractmethod
    def sample_masks(self, masks: np.ndarray, sample: int, rng: np.random.Generator) -> np.ndarray:
        """The masks [c, H, W] of sample number `sample` (0-based), from the plain masks."""

    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        feature_maps = layer.outputs[contract.OUTPUT_FEATURE_MAPS]  # [N, h, w, C]
        classes = layer.outputs[contract.OUTPUT_EXPLAINED_CLASS]  # [N, K]
        weights = np.zeros((len(feature_maps), classes.shape[1], feature_maps.shape[-1]), np.float32)
        rng = np.random.default_rng(self.options.seed)
        for n, (activations, image) in enumerate(zip(feature_maps, layer.images, strict=True)):
            chosen = np.argsort(-activations.mean(axis=(0, 1)), kind="stable")[: self.options.max_channels]
            masks = normalised_masks(activations[..., chosen], image.shape[:2])
            total = sum(
                masked_scores(layer, self.sample_masks(masks, sample, rng), image, classes[n])
                for sample in range(self.samples)
            )
            weights[n][:, chosen] = channel_softmax(total / self.samples)
        return weights


class SsCam(AveragedScoreCam):
    """SS-CAM: each sample's mask is the plain mask plus Gaussian noise of std SSCAM_STD (not
    clipped, as torchcam), drawn from numpy's default_rng(options.seed): [c, H, W] per sample, in
    order, for each image in turn."""

    name = "sscam"
    samples = SSCAM_SAMPLES

    def sample_masks(self, masks: np.ndarray, sample: int, rng: np.random.Generator) -> np.ndarray:
        return masks + rng.normal(0, SSCAM_STD, masks.shape).astype(np.float32)


class IsCam(AveragedScoreCam):
    """IS-CAM: sample i (1-based) masks with the mask times sum_{j <= i} j / samples, as torchcam
    does (the paper's integration path, accumulated). No noise: deterministic."""

    name = "iscam"
    samples = ISCAM_SAMPLES

    def sample_masks(self, masks: np.ndarray, sample: int, rng: np.random.Generator) -> np.ndarray:
        steps = np.arange(1, sample + 2)
        return masks * np.float32(steps.sum() / self.samples)


def normalised_masks(activations: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[c, H, W]: each channel of activations [h, w, c] min-max normalised to 0..1, then bilinearly
    upsampled to `size` (torchcam's order; pytorch-grad-cam's Score-CAM upsamples first)."""
    low = activations.min(axis=(0, 1))
    scaled = ((activations - low) / (activations.max(axis=(0, 1)) - low + MASK_EPS)).astype(np.float32)
    height, width = size
    return np.stack([
        cv2.resize(np.ascontiguousarray(channel), (width, height), interpolation=cv2.INTER_LINEAR)
        for channel in np.moveaxis(scaled, -1, 0)
    ])

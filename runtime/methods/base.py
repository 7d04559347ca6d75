"""The shared shape of a CAM method: which outputs it fetches, and how they become raw maps.

After pytorch-grad-cam's `get_cam_weights`: most methods only say how they weigh the channels
of the feature maps; `WeightedCam` does the rest. A method sees one target layer at a time, its
outputs under their base names (`feature_maps`, `gradients`, ...), and may run the model again on
other images through `LayerInputs.run` without knowing about onnxruntime.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import contract
from ..model_card import ModelCard

DEFAULT_MAX_CHANNELS = 256

Outputs = Mapping[str, np.ndarray]
# (images [M, H, W, 3] float32 raw RGB 0..255, class_index [M, K] int64, layer_outputs) ->
# probabilities, explained_class and score of those images, and the layer_outputs (base names of
# contract.LAYER_OUTPUTS, default none) of this target layer
Run = Callable[..., Outputs]


@dataclass(frozen=True)
class Options:
    """Settings shared by every method; each reads the ones it uses."""

    eigen_smooth: bool = False  # first principal component of the weighted activations, not their sum
    max_channels: int = DEFAULT_MAX_CHANNELS  # Score-CAM and its kin: channels re-run per image
    seed: int = 0  # the noise of SS-CAM and Smooth Grad-CAM++


@dataclass(frozen=True)
class LayerInputs:
    """What a method gets for one target layer of one model run."""

    outputs: Outputs  # this layer's outputs by base name, explained_class [N, K], probabilities [N, classes]
    images: np.ndarray  # [N, H, W, 3] float32 raw RGB 0..255: the model input of this run
    run: Run  # the same model on other images or classes: run(images, class_index, layer_outputs=())
    batch_size: int  # the most images one `run` call may take


class CamMethod(ABC):
    """Turns one layer's fetched outputs into raw (not normalised) maps [N, K, h, w]."""

    name: ClassVar[str]
    layer_outputs: tuple[str, ...]  # contract.LAYER_OUTPUTS to fetch for every target layer

    def __init__(self, options: Options = Options()) -> None:
        self.options = options

    def check(self, card: ModelCard) -> None:
        """Raise UsageError (one line) if this method cannot explain the model `card` describes."""

    @abstractmethod
    def raw_maps(self, layer: LayerInputs) -> np.ndarray:
        """Raw maps [N, K, h, w], float32, >= 0."""


class WeightedCam(CamMethod):
    """ReLU(sum_c weights * feature_maps), or with eigen_smooth ReLU(first_component(weights *
    feature_maps)). Subclasses give the weights: [N, K, C] for one weight per channel, or
    [N, K, h, w, C] for one weight per channel and position."""

    layer_outputs = (contract.OUTPUT_FEATURE_MAPS, contract.OUTPUT_GRADIENTS)

    @abstractmethod
    def cam_weights(self, layer: LayerInputs) -> np.ndarray:
        """[N, K, C] or [N, K, h, w, C]."""

    def weighted_activations(self, layer: LayerInputs) -> np.ndarray:
        """[N, K, h, w, C]: the weights times the feature maps."""
        weights = self.cam_weights(layer)
        if weights.ndim == 3:
            weights = weights[:, :, None, None, :]
        return weights * layer.outputs[contract.OUTPUT_FEATURE_MAPS][:, None]

    def raw_maps(self, layer: LayerInputs) -> np.ndarray:
        weighted = self.weighted_activations(layer)
        cam = first_component(weighted) if self.options.eigen_smooth else weighted.sum(axis=-1)
        return np.maximum(cam, 0).astype(np.float32)


def first_component(activations: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's get_2d_projection over [..., h, w, C] -> [..., h, w]: the positions x
    channels matrix, centred per channel, projected on its first right singular vector. The SVD's
    sign is arbitrary (pytorch-grad-cam keeps it, and on a trained CNN it came out inverted for
    almost every image); here it is chosen so that the projection agrees with the activations'
    magnitude sum_c |activations|: their dot product over positions is >= 0. At a ReLU layer that
    is the channel sum; at a layer of signed activations the channel sum can point at the
    background (4 of 90 images inverted on the test suite's trained CNN), the magnitude did not."""
    *batch, height, width, channels = activations.shape
    flat = activations.reshape(*batch, height * width, channels)
    centred = flat - flat.mean(axis=-2, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projection = np.einsum("...pc,...c->...p", centred, vt[..., 0, :])
    return signed_like(projection, flat).reshape(*batch, height, width).astype(np.float32)


def signed_like(projection: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """projection [..., P] times -1 where needed so that its dot product with the activations'
    magnitude sum_c |flat| ([..., P, C]) is >= 0: a principal component's sign, made meaningful."""
    agreement = np.einsum("...p,...p->...", projection, np.abs(flat).sum(axis=-1))
    return projection * np.where(agreement < 0, -1, 1)[..., None]


def same_for_every_class(maps: np.ndarray, layer: LayerInputs) -> np.ndarray:
    """[N, h, w] maps of a method that ignores the class -> [N, K, h, w]."""
    classes = layer.outputs[contract.OUTPUT_EXPLAINED_CLASS].shape[1]
    return np.repeat(maps[:, None], classes, axis=1).astype(np.float32, copy=False)

"""What an explanation returns: small records, plain data."""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import render
from .errors import ImageError


@dataclass(frozen=True)
class Prediction:
    """One class of the model's top-k."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True, eq=False)
class ClassMap:
    """The heatmap of one explained class, at the original image's size."""

    class_index: int
    label: str
    rank: int  # 1 = the most probable class of this image
    heatmap: np.ndarray  # float32 [H, W], 0..1
    cam: np.ndarray  # float32 [h, w], 0..1: the map at the target layer's resolution (the finest layer's, with several)
    peak: tuple[int, int]  # (x, y) of the heatmap's maximum, original pixel coordinates


@dataclass(frozen=True, eq=False)
class Explanation:
    """Predictions and class maps for one image."""

    source: str  # the path, or <bytes>/<array> (with its position in a list)
    image: np.ndarray  # the decoded original, HxWx3 uint8 RGB
    predictions: tuple[Prediction, ...]  # top-k, most probable first
    maps: tuple[ClassMap, ...]  # one per explained class, in the order asked
    method: str  # the CAM method that made the maps

    @property
    def heatmaps(self) -> list[np.ndarray]:
        return [class_map.heatmap for class_map in self.maps]

    @cached_property
    def overlays(self) -> list[np.ndarray]:
        """JET heatmap * 0.4 + image, clipped: HxWx3 uint8 RGB, one per map (rendered once)."""
        return [render.overlay(self.image, class_map.heatmap) for class_map in self.maps]


@dataclass(frozen=True, eq=False)
class Outcome:
    """One input of `Explainer.explain_each`: an explanation, or the error that stopped it."""

    source: str
    explanation: Explanation | None = None
    error: ImageError | None = None

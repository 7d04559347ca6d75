"""What an explanation returns: small records, plain data."""

from dataclasses import dataclass

import numpy as np

from . import render
from .errors import ImageError
from .images import Original


@dataclass(frozen=True)
class Prediction:
    """One class of the model's top-k."""

    index: int
    label: str
    probability: float


@dataclass(frozen=True, eq=False)
class ClassMap:
    """The map of one explained class. Its heatmap at the original image's size is rendered from
    the raw maps on each access, not kept: at 36 Mpx it is 144 MB."""

    class_index: int
    label: str
    rank: int  # 1 = the most probable class of this image
    cam: np.ndarray  # float32 [h, w], 0..1: the map at the target layer's resolution (the finest layer's, with several)
    peak: tuple[int, int]  # (x, y) of the heatmap's maximum, original pixel coordinates
    raw_maps: tuple[np.ndarray, ...]  # [h, w] per target layer (and augmentation): what the heatmap fuses
    size: tuple[int, int]  # (height, width) of the original image

    @property
    def heatmap(self) -> np.ndarray:
        """float32 [H, W], 0..1, at the original image's size (rendered on each access)."""
        return render.fuse(self.raw_maps, self.size)


@dataclass(frozen=True, eq=False)
class Explanation:
    """Predictions and class maps for one image. The image, heatmaps and overlays at full size
    are made on each access (decoded, rendered), never kept: keep what you use twice."""

    source: str  # the path, or <bytes>/<array> (with its position in a list)
    original: Original  # the image as read, decoded again on demand
    predictions: tuple[Prediction, ...]  # top-k, most probable first
    maps: tuple[ClassMap, ...]  # one per explained class, in the order asked
    method: str  # the CAM method that made the maps

    @property
    def image(self) -> np.ndarray:
        """The decoded original, HxWx3 uint8 RGB."""
        return self.original.decode()

    @property
    def heatmaps(self) -> list[np.ndarray]:
        return [class_map.heatmap for class_map in self.maps]

    @property
    def overlays(self) -> list[np.ndarray]:
        """JET heatmap * 0.4 + image, clipped: HxWx3 uint8 RGB, one per map."""
        image = self.image
        return [render.overlay(image, class_map.heatmap) for class_map in self.maps]


@dataclass(frozen=True, eq=False)
class Outcome:
    """One input of `Explainer.explain_each`: an explanation, or the error that stopped it."""

    source: str
    explanation: Explanation | None = None
    error: ImageError | None = None

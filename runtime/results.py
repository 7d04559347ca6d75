"""What an explanation returns: small records, plain data; and `record`, the one plain dict
(JSON-ready) of a result that every front end prints, returns or stores.

    from .results import record, weights_record
    explanation.to_record()                       # one method's result
    record(per_method_explanations, card)         # one image under several methods, with "weights"
    # {"image": "cat.jpg",
    #  "predictions": [{"index": 281, "label": "tabby", "probability": 0.61}, ...],
    #  "maps": [{"method": "gradcam", "class_index": 281, "label": "tabby", "rank": 1,
    #            "peak": [x, y]}, ...],             # + "cam": [[...], ...] with cam=True
    #  "weights": {"source": "imagenet", "random": false}}     # with a card
Front ends add only their own keys (file names, base64 images, a path and ok flag).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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

    def to_record(self, card: Any = None, cam: bool = False) -> dict[str, Any]:
        """This result as the one plain dict: see `record`."""
        return record([self], card, cam)


@dataclass(frozen=True, eq=False)
class Outcome:
    """One input of `Explainer.explain_each`: an explanation, or the error that stopped it."""

    source: str
    explanation: Explanation | None = None
    error: ImageError | None = None


def record(explanations: Sequence[Explanation], card: Any = None, cam: bool = False) -> dict[str, Any]:
    """One image's explanations (one per method, of the same image and predictions) as one plain,
    JSON-ready dict: image, predictions, maps (method, class_index, label, rank, peak [x, y];
    and cam, the low-resolution map as nested lists, with cam=True), and with the model's
    ModelCard, weights (weights_record)."""
    first = explanations[0]
    document: dict[str, Any] = {
        "image": first.source,
        "predictions": [
            {"index": p.index, "label": p.label, "probability": p.probability} for p in first.predictions
        ],
        "maps": [
            map_record(explanation.method, class_map, cam)
            for explanation in explanations
            for class_map in explanation.maps
        ],
    }
    if card is not None:
        document["weights"] = weights_record(card)
    return document


def map_record(method: str, class_map: ClassMap, cam: bool = False) -> dict[str, Any]:
    """One map's entry in `record`."""
    entry: dict[str, Any] = {
        "method": method,
        "class_index": class_map.class_index,
        "label": class_map.label,
        "rank": class_map.rank,
        "peak": list(class_map.peak),
    }
    if cam:
        entry["cam"] = class_map.cam.tolist()
    return entry


def weights_record(card: Any) -> dict[str, Any]:
    """Where a model's weights came from (ModelCard.weights' source) and whether they were random."""
    return {"source": card.weights.get("source"), "random": card.random_weights}

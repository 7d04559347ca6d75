"""Localisation scores for heatmaps of the shapes model: the pointing game, and a
class-discriminative version of it on images that hold two different shapes."""

from __future__ import annotations

import numpy as np

from runtime import Explainer


def inside(point: tuple[int, int], box: np.ndarray) -> bool:
    x, y = point
    x0, y0, x1, y1 = box
    return bool(x0 <= x <= x1 and y0 <= y <= y1)


def pointing_game(explainer: Explainer, images: np.ndarray, labels: np.ndarray, boxes: np.ndarray) -> float:
    """Share of images whose heatmap peak (for the true class) falls inside the object's box."""
    hits = 0
    for label in np.unique(labels):
        chosen = np.flatnonzero(labels == label)
        explanations = explainer.explain(list(images[chosen]), class_index=int(label))
        hits += sum(inside(e.maps[0].peak, box) for e, box in zip(explanations, boxes[chosen], strict=True))
    return hits / len(images)


def discrimination(heatmaps: list[list[np.ndarray]], boxes: np.ndarray) -> float:
    """heatmaps[i][k]: image i's map for its k-th shape's class (k = 0, 1); boxes [N, 2, 4].
    Share of shapes whose own class's map is stronger in the shape's box (mean value) than the
    other shape's class's map is there. A map that ignores the class (the same map for both)
    scores 0, a map that ignores the image about 0.5."""
    wins = 0
    for maps, pair in zip(heatmaps, boxes, strict=True):
        for k, (x0, y0, x1, y1) in enumerate(pair):
            own, other = (maps[j][y0 : y1 + 1, x0 : x1 + 1].mean() for j in (k, 1 - k))
            wins += own > other
    return wins / (2 * len(heatmaps))


def pair_heatmaps(explainer: Explainer, images: np.ndarray, labels: np.ndarray) -> list[list[np.ndarray]]:
    """Per image, the heatmaps of its two shapes' classes (labels [N, 2]), in that order."""
    return [
        explainer.explain(image, class_index=[int(c) for c in pair]).heatmaps
        for image, pair in zip(images, labels, strict=True)
    ]

"""Every CAM method, and the smoothing options, point at the object for a model trained here
(the pointing game). Run with -s to see each hit rate."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import METHODS, Explainer
from tests.keras_models import draw_shapes

IMAGES = 90
MIN_HIT_RATE = 0.8
SETTINGS = [(method, {}) for method in METHODS] + [
    ("gradcam", {"eigen_smooth": True}),
    ("gradcam", {"aug_smooth": True}),
    ("layercam", {"eigen_smooth": True}),
]


def pointing_game(explainer: Explainer, images: np.ndarray, labels: np.ndarray, boxes: np.ndarray) -> float:
    """Share of images whose heatmap peak (for the true class) falls inside the object's box."""
    hits = 0
    for label in np.unique(labels):
        chosen = np.flatnonzero(labels == label)
        explanations = explainer.explain(list(images[chosen]), class_index=int(label))
        for explanation, (x0, y0, x1, y1) in zip(explanations, boxes[chosen], strict=True):
            x, y = explanation.maps[0].peak
            hits += x0 <= x <= x1 and y0 <= y <= y1
    return hits / len(images)


@pytest.mark.parametrize(
    "method, options", SETTINGS, ids=[f"{m}{''.join(f'-{o}' for o in s)}" for m, s in SETTINGS]
)
def test_every_method_points_at_the_object(shapes_model, method, options):
    images, labels, boxes = draw_shapes(IMAGES, seed=97)
    explainer = Explainer(shapes_model.onnx_path, device="cpu", batch_size=32, method=method, **options)
    hit_rate = pointing_game(explainer, images, labels, boxes)
    print(f"pointing game, {method} {options}: {hit_rate:.1%} of {IMAGES}")
    assert hit_rate >= MIN_HIT_RATE

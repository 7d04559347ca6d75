"""Faithfulness metrics of saliency maps, over any `score` callable (numpy only).

score(images [M, H, W, 3] float32 raw RGB 0..255, classes [M] int) -> [M] the probability of each
image's class. Every map is [H, W], the image's size; higher = more important.
"""

from collections.abc import Callable, Iterator

import cv2
import numpy as np

Score = Callable[[np.ndarray, np.ndarray], np.ndarray]
BLUR_KERNEL = (11, 11)  # RISE's insertion baseline: a Gaussian blur, kernel 11, sigma 5
BLUR_SIGMA = 5.0


def pixel_order(saliency: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most salient first (ties in row order)."""
    return np.argsort(-saliency.ravel(), kind="stable")


def blurred(image: np.ndarray) -> np.ndarray:
    """RISE's insertion start: the image blurred by a Gaussian (kernel 11x11, sigma 5)."""
    return cv2.GaussianBlur(image.astype(np.float32), BLUR_KERNEL, BLUR_SIGMA)


def _steps_images(
    start: np.ndarray, end: np.ndarray, order: np.ndarray, steps: int, batch_size: int
) -> Iterator[np.ndarray]:
    """Batches of the images at steps 0..steps: at step k the first round(k / steps * H * W) pixels
    of `order` come from `end`, the others from `start`. At most batch_size images at a time."""
    height, width = start.shape[:2]
    counts = np.rint(np.arange(steps + 1) / steps * height * width).astype(int)
    rank = np.empty(height * width, dtype=int)
    rank[order] = np.arange(height * width)
    rank = rank.reshape(height, width)
    for first in range(0, steps + 1, batch_size):
        chosen = rank[None] < counts[first:first + batch_size, None, None]
        yield np.where(chosen[..., None], end[None], start[None]).astype(np.float32)


def curve(
    score: Score, start: np.ndarray, end: np.ndarray, saliency: np.ndarray, class_index: int,
    steps: int, batch_size: int,
) -> np.ndarray:
    """The class's probability at each of steps + 1 steps from `start` to `end`, pixels switched
    in order of `saliency` (most salient first)."""
    order = pixel_order(saliency)
    values = [
        score(batch, np.full(len(batch), class_index, dtype=np.int64))
        for batch in _steps_images(start, end, order, steps, batch_size)
    ]
    return np.concatenate(values).astype(np.float64)


def deletion_curve(
    score: Score, image: np.ndarray, saliency: np.ndarray, class_index: int, steps: int = 50,
    batch_size: int = 32,
) -> np.ndarray:
    """RISE deletion: the most salient pixels set to black (0), a fraction k / steps at step k."""
    image = image.astype(np.float32)
    return curve(score, image, np.zeros_like(image), saliency, class_index, steps, batch_size)


def blur_deletion_curve(
    score: Score, image: np.ndarray, saliency: np.ndarray, class_index: int, steps: int = 50,
    batch_size: int = 32,
) -> np.ndarray:
    """Deletion to the blurred image instead of black: scattered black pixels are an artefact
    that can break a small object for any order of removal; blurred pixels keep its colours."""
    image = image.astype(np.float32)
    return curve(score, image, blurred(image), saliency, class_index, steps, batch_size)


def insertion_curve(
    score: Score, image: np.ndarray, saliency: np.ndarray, class_index: int, steps: int = 50,
    batch_size: int = 32,
) -> np.ndarray:
    """RISE insertion: from the blurred image, the most salient pixels revealed first."""
    image = image.astype(np.float32)
    return curve(score, blurred(image), image, saliency, class_index, steps, batch_size)


def auc(values: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1, by the trapezoid rule."""
    values = np.asarray(values, dtype=np.float64)
    return float((values[:-1] + values[1:]).sum() / 2 / (len(values) - 1))


def confidence_change(
    score: Score, images: np.ndarray, saliencies: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM++'s per-image terms: drop = max(0, Y - O) / Y * 100 and increase = 100 if O > Y
    else 0, where Y is the class's probability on the image and O on the image multiplied by its
    map normalised to 0..1 (divided by its maximum). Average them over images for average drop %
    and increase in confidence %."""
    images = images.astype(np.float32)
    masks = np.stack([_normalised(s) for s in saliencies])
    original = np.asarray(score(images, classes), dtype=np.float64)
    masked = np.asarray(score(images * masks[..., None], classes), dtype=np.float64)
    drop = np.maximum(0.0, original - masked) / np.maximum(original, 1e-12) * 100
    increase = np.where(masked > original, 100.0, 0.0)
    return drop, increase


def pointing_hit(saliency: np.ndarray, boxes: np.ndarray, tolerance: int = 0) -> float:
    """Pointing game (Zhang et al. 2016): 1.0 if the map's maximum (first in row order) lies
    within `tolerance` pixels of any box (x0, y0, x1, y1, inclusive), else 0.0."""
    y, x = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
        dx = max(x0 - x, 0, x - x1)
        dy = max(y0 - y, 0, y - y1)
        if dx * dx + dy * dy <= tolerance * tolerance:
            return 1.0
    return 0.0


def _normalised(saliency: np.ndarray) -> np.ndarray:
    """ReLU(map) / its maximum, in 0..1 (all zero if it has no positive value)."""
    positive = np.maximum(saliency.astype(np.float32), 0)
    top = float(positive.max())
    return positive / top if top > 0 else positive

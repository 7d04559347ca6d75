"""Faithfulness metrics of saliency maps, over any `score` callable (numpy only).

score(images [M, H, W, 3] float32 raw RGB 0..255, classes [M] int) -> [M] the probability of each
image's class. Every map is [H, W], the image's size; higher = more important.

The libraries perturb the model's *normalised* input tensor: "zero" there (deletion's substrate,
the padding of RISE's blur, a map's 0 in image x map) is the raw colour the model's preprocessing
maps to 0 (`Normalisation.zero`: ImageNet's mean colour for torch preprocessing, black for none).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

Score = Callable[[np.ndarray, np.ndarray], np.ndarray]
BLUR_KERNEL = (11, 11)  # deletion-blur (ours): a Gaussian blur, kernel 11, sigma 5, reflected border
BLUR_SIGMA = 5.0
RISE_KERNEL, RISE_SIGMA = 11, 5.0  # RISE's gkern(11, 5): scipy's gaussian_filter of an 11x11 delta
TORCHCAM_EPSILON = 1e-7  # torchcam's average drop: relu(Y - O) / (Y + 1e-7)


@dataclass(frozen=True)
class Normalisation:
    """What the model does to raw pixels first: (raw - zero) / std per RGB channel."""

    zero: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def zero_image(self, image: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.zero, np.float32), image.shape).astype(np.float32)


def pixel_order(saliency: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most salient first (ties in row order, as torchcam's stable sort)."""
    return np.argsort(-saliency.ravel(), kind="stable")


def step_counts(pixels: int, steps: int) -> np.ndarray:
    """RISE's (and torchcam's) schedule: ceil(pixels / steps) pixels per step, the last step
    taking what is left: [0, s, 2s, ..., pixels]."""
    size = -(-pixels // steps)
    return np.minimum(np.arange(-(-pixels // size) + 1) * size, pixels)


def blurred(image: np.ndarray) -> np.ndarray:
    """deletion-blur's substrate (ours): the image blurred by a Gaussian (kernel 11, sigma 5)."""
    return cv2.GaussianBlur(image.astype(np.float32), BLUR_KERNEL, BLUR_SIGMA)


def rise_kernel() -> np.ndarray:
    """RISE's gkern(11, 5) for one channel: scipy.ndimage.gaussian_filter(delta, 5) on an 11x11
    delta, i.e. the outer product of a 1-D sigma-5 Gaussian (radius 20 = truncate 4) folded back
    into 11 taps by half-sample reflection (scipy's mode 'reflect')."""
    radius = int(4 * RISE_SIGMA + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / RISE_SIGMA) ** 2)
    weights /= weights.sum()
    centre, period = RISE_KERNEL // 2, 2 * RISE_KERNEL
    folded = np.zeros(RISE_KERNEL)
    for offset, weight in zip(offsets, weights):
        position = (centre + offset) % period
        folded[position if position < RISE_KERNEL else period - 1 - position] += weight
    return np.outer(folded, folded)


def rise_blurred(image: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """RISE's insertion substrate: conv2d(normalised image, gkern(11, 5), padding 5), zeros
    outside the image in the normalised space, here in raw pixels."""
    zero = np.asarray(normalisation.zero, np.float32)
    centred = image.astype(np.float32) - zero
    blurred_ = cv2.filter2D(centred, cv2.CV_32F, rise_kernel().astype(np.float32), borderType=cv2.BORDER_CONSTANT)
    return blurred_ + zero


def _steps_images(
    start: np.ndarray, end: np.ndarray, order: np.ndarray, counts: np.ndarray, batch_size: int
) -> Iterator[np.ndarray]:
    """Batches of the images at each count: the first counts[k] pixels of `order` come from
    `end`, the others from `start`. At most batch_size images at a time."""
    height, width = start.shape[:2]
    rank = np.empty(height * width, dtype=int)
    rank[order] = np.arange(height * width)
    rank = rank.reshape(height, width)
    for first in range(0, len(counts), batch_size):
        chosen = rank[None] < counts[first:first + batch_size, None, None]
        yield np.where(chosen[..., None], end[None], start[None]).astype(np.float32, copy=False)


def curve(
    score: Score, start: np.ndarray, end: np.ndarray, saliency: np.ndarray, class_index: int,
    steps: int, batch_size: int,
) -> np.ndarray:
    """The class's probability at each step of step_counts from `start` to `end`, pixels switched
    in order of `saliency` (most salient first)."""
    counts = step_counts(saliency.size, steps)
    values = [
        score(batch, np.full(len(batch), class_index, dtype=np.int64))
        for batch in _steps_images(start, end, pixel_order(saliency), counts, batch_size)
    ]
    return np.concatenate(values).astype(np.float64)


def deletion_curve(
    score: Score, image: np.ndarray, saliency: np.ndarray, class_index: int, steps: int = 50,
    batch_size: int = 32, normalisation: Normalisation = Normalisation(),
) -> np.ndarray:
    """RISE (and torchcam) deletion: the most salient pixels set to the model input's zero."""
    image = image.astype(np.float32)
    return curve(score, image, normalisation.zero_image(image), saliency, class_index, steps, batch_size)


def insertion_curve(
    score: Score, image: np.ndarray, saliency: np.ndarray, class_index: int, steps: int = 50,
    batch_size: int = 32, normalisation: Normalisation = Normalisation(),
) -> np.ndarray:
    """RISE insertion: from RISE's blurred image, the most salient pixels revealed first."""
    image = image.astype(np.float32)
    return curve(score, rise_blurred(image, normalisation), image, saliency, class_index, steps, batch_size)


def torchcam_insertion_curve(
    score: Score, image: np.ndarray, saliency: np.ndarray, class_index: int, steps: int = 50,
    batch_size: int = 32, normalisation: Normalisation = Normalisation(),
) -> np.ndarray:
    """torchcam's DeletionInsertionMetric insertion: from the model input's zero (not a blur)."""
    image = image.astype(np.float32)
    return curve(score, normalisation.zero_image(image), image, saliency, class_index, steps, batch_size)


def blur_deletion_curve(
    score: Score, image: np.ndarray, saliency: np.ndarray, class_index: int, steps: int = 50,
    batch_size: int = 32, normalisation: Normalisation = Normalisation(),
) -> np.ndarray:
    """Ours, no library's: deletion to the image blurred (sigma 5) instead of to zero, so the
    removed pixels keep their colours and lose their detail."""
    image = image.astype(np.float32)
    return curve(score, image, blurred(image), saliency, class_index, steps, batch_size)


def auc(values: np.ndarray) -> float:
    """RISE's auc: the trapezoid rule over evenly spaced steps, the x axis 0..1. torchcam
    integrates over the fractions actually removed: the same unless the last step is short
    (steps not dividing H*W)."""
    values = np.asarray(values, dtype=np.float64)
    return float((values[:-1] + values[1:]).sum() / 2 / (len(values) - 1))


def multiplied(image: np.ndarray, saliency: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """The normalised input times the map, in raw pixels: zero + (image - zero) * map, the map
    normalised (ReLU, divided by its maximum). What torchcam and pytorch-grad-cam feed."""
    zero = np.asarray(normalisation.zero, np.float32)
    return zero + (image.astype(np.float32) - zero) * _normalised(saliency)[..., None]


def confidence_change(
    score: Score, images: np.ndarray, saliencies: np.ndarray, classes: np.ndarray,
    normalisation: Normalisation = Normalisation(),
) -> dict[str, np.ndarray]:
    """Per image, with Y the class's probability on the image and O on the image times its map:
    average-drop = relu(Y - O) / (Y + 1e-7) * 100 and increase-in-confidence = 100 if O > Y
    (torchcam's ClassificationMetric, Grad-CAM++'s definitions, in %); drop-in-confidence =
    max(0, Y - O) and confidence-change = O - Y (pytorch-grad-cam's DropInConfidence and
    CamMultImageConfidenceChange, in probability). Average each over images."""
    masked_images = np.stack([multiplied(i, s, normalisation) for i, s in zip(images, saliencies, strict=True)])
    original = np.asarray(score(images.astype(np.float32), classes), dtype=np.float64)
    masked = np.asarray(score(masked_images, classes), dtype=np.float64)
    return {
        "average-drop": np.maximum(0.0, original - masked) / (original + TORCHCAM_EPSILON) * 100,
        "increase-in-confidence": np.where(masked > original, 100.0, 0.0),
        "drop-in-confidence": np.maximum(0.0, original - masked),
        "confidence-change": masked - original,
    }


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

"""Maps that are not explanations, so that a metric's figure means something.

A CAM is smooth: a map at the layer's resolution, upsampled. Removing its top pixels removes
regions; removing the top pixels of per-pixel noise scatters holes over the whole image, which
breaks a CNN faster than any region does (the leakage ROAD describes). So the random baselines a
CAM is compared with are drawn at the layer's resolution and upsampled exactly as the maps are
(render.fuse); the per-pixel noise map is kept, named pixel-noise, to show that effect.
"""

from collections.abc import Sequence

import cv2
import numpy as np

from .. import render

BASELINES = ("random-cam", "layer-noise", "pixel-noise", "gaussian", "edge")


def random_cam(feature_maps: Sequence[np.ndarray], size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """pytorch-grad-cam's RandomCAM: per target layer ReLU(sum_c w_c A_c) with channel weights
    w ~ U(-1, 1), normalised and upsampled as every method's maps (render.fuse). feature_maps:
    one [h, w, C] per target layer."""
    raw = [np.maximum(a @ rng.uniform(-1, 1, a.shape[-1]).astype(np.float32), 0) for a in feature_maps]
    return render.fuse(raw, size)


def layer_noise(shapes: Sequence[tuple[int, int]], size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Uniform noise at each target layer's resolution, upsampled as the maps are."""
    return render.fuse([rng.random(shape, dtype=np.float32) for shape in shapes], size)


def pixel_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Uniform noise in 0..1 per pixel (not a fair CAM baseline: see the module's note)."""
    return rng.random(shape, dtype=np.float32)


def gaussian_map(shape: tuple[int, int]) -> np.ndarray:
    """A centred Gaussian, sigma a quarter of each side, 1 at the centre."""
    height, width = shape
    y = (np.arange(height, dtype=np.float32) - (height - 1) / 2) / (height / 4)
    x = (np.arange(width, dtype=np.float32) - (width - 1) / 2) / (width / 4)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).astype(np.float32)


def edge_map(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the grey image, divided by its maximum: a map that never
    looks at the model."""
    grey = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)
    magnitude = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    top = float(magnitude.max())
    return (magnitude / top if top > 0 else magnitude).astype(np.float32)


def baseline_maps(
    image: np.ndarray, feature_maps: Sequence[np.ndarray], seed: int, index: int
) -> dict[str, np.ndarray]:
    """Every baseline's map of one image (the index-th of the run), by name; the random ones
    seeded by (seed, index), so the same run gives the same maps."""
    shape = image.shape[:2]
    rng = np.random.default_rng([seed, index])
    return {
        "random-cam": random_cam(feature_maps, shape, rng),
        "layer-noise": layer_noise([a.shape[:2] for a in feature_maps], shape, rng),
        "pixel-noise": pixel_noise(shape, rng),
        "gaussian": gaussian_map(shape),
        "edge": edge_map(image),
    }

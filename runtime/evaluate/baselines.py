"""Maps that are not explanations, so that a metric's figure means something."""

import cv2
import numpy as np


def random_map(shape: tuple[int, int], seed: int, index: int) -> np.ndarray:
    """Uniform noise in 0..1, seeded by (seed, index): the same run gives the same maps."""
    return np.random.default_rng([seed, index]).random(shape, dtype=np.float32)


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


def baseline_maps(image: np.ndarray, seed: int, index: int) -> dict[str, np.ndarray]:
    """Every baseline's map of one image, by name."""
    shape = image.shape[:2]
    return {"random": random_map(shape, seed, index), "gaussian": gaussian_map(shape), "edge": edge_map(image)}

"""The benchmark's images: examples/cat.jpg, decoded once and shifted so each one differs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.images import decode_image, resize_for_model

IMAGE = Path(__file__).resolve().parent.parent / "examples" / "cat.jpg"
INPUT_SIZE = (224, 224)  # ResNet50's


def photos(count: int) -> list[np.ndarray]:
    """`count` decoded HxWx3 uint8 RGB photos at the example's own size."""
    cat = decode_image(IMAGE, str(IMAGE))
    return [np.roll(cat, 7 * index, axis=1) for index in range(count)]


def model_batch(count: int) -> np.ndarray:
    """The same photos as the network sees them: float32 [count, 224, 224, 3], raw 0..255,
    resized as the runtime resizes them."""
    return np.stack([resize_for_model(photo, INPUT_SIZE) for photo in photos(count)])

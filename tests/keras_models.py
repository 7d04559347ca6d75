"""Small Keras models the tests build, train and export offline (TensorFlow side only)."""

from __future__ import annotations

import cv2
import keras
import numpy as np

SHAPES = ("circle", "square", "triangle")


def small_cnn(classes: int = 5, size: int = 48) -> keras.Model:
    """A user-style classifier: conv blocks, a skip connection, GAP, Dense softmax."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D()(x)
    shortcut = keras.layers.Conv2D(16, 1, name="shortcut")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Add(name="block_out")([x, shortcut])
    x = keras.layers.Conv2D(24, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


def clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark noisy background crossed by random bright lines."""
    image = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    for _ in range(6):
        p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
        colour = tuple(int(c) for c in rng.integers(40, 256, 3))
        cv2.line(image, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), colour, 1)
    return image


def draw_shape(image: np.ndarray, shape: str, box: tuple[int, int, int, int], colour: tuple[int, ...]) -> None:
    """Fill `shape` (one of SHAPES) into the inclusive box (x0, y0, x1, y1) of `image`."""
    x0, y0, x1, y1 = box
    if shape == "circle":
        cv2.circle(image, ((x0 + x1) // 2, (y0 + y1) // 2), (x1 - x0 + 1) // 2, colour, -1)
    elif shape == "square":
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
    else:
        cv2.fillPoly(image, [np.array([[(x0 + x1) // 2, y0], [x0, y1], [x1, y1]], np.int32)], colour)


def draw_shapes(count: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images of one shape at a random place on clutter; labels; boxes (x0, y0, x1, y1) inclusive."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    labels = rng.integers(0, len(SHAPES), count)
    boxes = np.empty((count, 4), np.int64)
    for i in range(count):
        image = clutter(rng, size)
        side = int(rng.integers(14, 21))
        x0, y0 = (int(v) for v in rng.integers(1, size - side - 1, 2))
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        draw_shape(image, SHAPES[labels[i]], box, tuple(int(c) for c in rng.integers(120, 256, 3)))
        images[i], boxes[i] = image, box
    return images, labels, boxes


def draw_shape_pairs(count: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images of two different shapes on clutter, one in the left half and one in the right half
    (which one is random); labels [count, 2]; boxes [count, 2, 4] (x0, y0, x1, y1) inclusive."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    labels = np.stack([rng.choice(len(SHAPES), 2, replace=False) for _ in range(count)])
    boxes = np.empty((count, 2, 4), np.int64)
    half = size // 2
    for i in range(count):
        image = clutter(rng, size)
        for k, left in enumerate(rng.permutation([0, half])):
            side = int(rng.integers(14, 19))
            x0 = int(left) + int(rng.integers(1, half - side))
            y0 = int(rng.integers(1, size - side - 1))
            boxes[i, k] = (x0, y0, x0 + side - 1, y0 + side - 1)
            draw_shape(image, SHAPES[labels[i, k]], tuple(boxes[i, k]), tuple(int(c) for c in rng.integers(120, 256, 3)))
        images[i] = image
    return images, labels, boxes


def train_shapes_classifier(epochs: int = 10) -> keras.Model:
    """A small CNN trained on `draw_shapes`; its GAP head makes Grad-CAM localise."""
    keras.utils.set_random_seed(2)
    images, labels, _ = draw_shapes(3000, seed=10)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    # "features_linear" is a layer of signed activations (Eigen-CAM's sign is tested there)
    x = keras.layers.Conv2D(48, 3, padding="same", name="features_linear")(x)
    x = keras.layers.ReLU(name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(SHAPES), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images.astype(np.float32), labels, batch_size=64, epochs=epochs, verbose=0)
    return model

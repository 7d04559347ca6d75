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


def draw_shapes(count: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images of one shape at a random place on clutter; labels; boxes (x0, y0, x1, y1) inclusive."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    labels = rng.integers(0, len(SHAPES), count)
    boxes = np.empty((count, 4), np.int64)
    for i in range(count):
        image = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
        for _ in range(6):  # clutter: random lines
            p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
            colour = tuple(int(c) for c in rng.integers(40, 256, 3))
            cv2.line(image, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), colour, 1)
        side = int(rng.integers(14, 21))
        x0, y0 = (int(v) for v in rng.integers(1, size - side - 1, 2))
        x1, y1 = x0 + side - 1, y0 + side - 1
        colour = tuple(int(c) for c in rng.integers(120, 256, 3))
        if SHAPES[labels[i]] == "circle":
            cv2.circle(image, ((x0 + x1) // 2, (y0 + y1) // 2), side // 2, colour, -1)
        elif SHAPES[labels[i]] == "square":
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
        else:
            triangle = np.array([[(x0 + x1) // 2, y0], [x0, y1], [x1, y1]], np.int32)
            cv2.fillPoly(image, [triangle], colour)
        images[i], boxes[i] = image, (x0, y0, x1, y1)
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
    x = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(SHAPES), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images.astype(np.float32), labels, batch_size=64, epochs=epochs, verbose=0)
    return model

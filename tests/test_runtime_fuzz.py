"""Seeded, time-bounded mutation fuzzing of the decoder and the Python API: every corrupted
image gives an array or explanation, or an ImageError of one line naming it; nothing else escapes."""

import io
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from runtime import Explainer, ImageError
from runtime.images import decode_image
from tests.fake_model import blob_image, write_fake_model

FORMATS = ("PNG", "JPEG", "TIFF", "GIF", "WEBP")
SECONDS = 15  # the whole fuzz run, both stages
MAX_PIXELS = 1_000_000  # mutated headers may claim huge sizes; keep each decode small


def valid_images() -> list[bytes]:
    image = Image.fromarray(blob_image(24, 32, (8, 6, 20, 16), (200, 40, 10)))
    encoded = []
    for format in FORMATS:
        for options in ({}, {"compression": "tiff_lzw"} if format == "TIFF" else {"optimize": True}):
            buffer = io.BytesIO()
            image.save(buffer, format, **options)
            encoded.append(buffer.getvalue())
    return encoded


def mutate(data: bytes, rng: np.random.Generator, pool: list[bytes]) -> bytes:
    """Bit flips, a truncation, or a splice of another valid file's chunk."""
    out = bytearray(data)
    kind = rng.integers(3)
    if kind == 0:
        for _ in range(rng.integers(1, 9)):
            position = rng.integers(len(out))
            out[position] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        out = out[: rng.integers(1, len(out))]
    else:
        other = pool[rng.integers(len(pool))]
        start, length = rng.integers(len(other)), rng.integers(1, 64)
        at = rng.integers(len(out))
        out[at : at + length] = other[start : start + length]
    return bytes(out)


def mutants(seed: int):
    rng = np.random.default_rng(seed)
    pool = valid_images()
    while True:
        yield mutate(pool[rng.integers(len(pool))], rng, pool)


def check_error(error: ImageError, source: str) -> None:
    assert type(error) is ImageError
    assert str(error).startswith(f"{source}: ") and "\n" not in str(error)


def test_mutated_images_through_the_decoder():
    deadline, count = time.monotonic() + SECONDS / 2, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings are allowed; only exceptions are checked
        for data in mutants(seed=10):
            if time.monotonic() > deadline:
                break
            count += 1
            try:
                pixels = decode_image(data, "fuzz", max_pixels=MAX_PIXELS)
            except ImageError as error:
                check_error(error, "fuzz")
            else:
                assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert count > 100


@pytest.fixture(scope="module")
def explainer(tmp_path_factory):
    model = write_fake_model(tmp_path_factory.mktemp("fuzz") / "fake.onnx")
    return Explainer(model, device="cpu", max_pixels=MAX_PIXELS, batch_size=8)


def test_mutated_images_through_explain_each(explainer):
    deadline, count = time.monotonic() + SECONDS / 2, 0
    stream = mutants(seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while time.monotonic() < deadline:
            batch = [next(stream) for _ in range(16)]
            for position, outcome in enumerate(explainer.explain_each(batch, top_k=2, explain_top=2)):
                count += 1
                assert outcome.source == f"<bytes #{position}>"
                if outcome.error is not None:
                    assert outcome.explanation is None
                    check_error(outcome.error, outcome.source)
                else:
                    explanation = outcome.explanation
                    assert len(explanation.maps) == 2
                    assert explanation.maps[0].heatmap.shape == explanation.image.shape[:2]
    assert count > 50

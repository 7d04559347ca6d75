"""runtime.png: files that PNG decoders (Pillow with its CRC checks, OpenCV's libpng) read back
as the same pixels."""

import io

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from runtime import png


def read_with_pillow(data: bytes) -> np.ndarray:
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs, the IEND
    return np.asarray(Image.open(io.BytesIO(data)))


def read_with_opencv(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return image[:, :, ::-1] if image.ndim == 3 else image


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (1, 9, 3), (7, 1, 3), (300, 451, 3), (513, 700), (1200, 1000, 3)])
def test_random_pixels_read_back_equal_with_pillow_and_opencv(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = bytes(png.encode_png(image))
    assert data.startswith(png.SIGNATURE)
    np.testing.assert_array_equal(read_with_pillow(data), image)
    np.testing.assert_array_equal(read_with_opencv(data), image)


def test_a_photo_view_read_back_equal_and_compresses_like_opencvs_png():
    image = skimage.data.astronaut()[::-1, 50:]  # a view: flipped, cropped, not contiguous
    data = bytes(png.encode_png(image))
    np.testing.assert_array_equal(read_with_pillow(data), image)
    opencv_size = len(cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]))[1])
    assert len(data) < 1.1 * opencv_size


def test_band_boundaries_one_row_at_a_time(monkeypatch):
    monkeypatch.setattr(png, "BAND_BYTES", 1)
    image = np.random.default_rng(3).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_with_pillow(bytes(png.encode_png(image))), image)


@pytest.mark.parametrize(
    "image",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros(4, np.uint8)],
    ids=["float", "rgba", "empty", "1-d"],
)
def test_what_is_not_an_8_bit_grey_or_rgb_image_is_refused(image):
    with pytest.raises(ValueError, match="PNG: a non-empty HxW or HxWx3 uint8 image"):
        png.encode_png(image)

"""Decoding (formats, orientation, transparency, limits, bad input) and resizing."""

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFile

from runtime.errors import ImageError
from runtime.images import decode_image, describe, resize_for_model


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels but whose data holds almost none."""
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        [
            png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
            png_chunk(b"IDAT", zlib.compress(b"\0" * 16)),
            png_chunk(b"IEND", b""),
        ]
    )


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_rgb_png_from_path_bytes_and_array_agree(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    for source in (path, str(path), path.read_bytes(), pixels):
        np.testing.assert_array_equal(decode_image(source, "a"), pixels)


def test_real_photo_jpeg_decodes_to_its_pixels(tmp_path):
    photo = skimage.data.astronaut()
    path = tmp_path / "astronaut.jpg"
    Image.fromarray(photo).save(path, quality=95)
    decoded = decode_image(path, str(path))
    assert decoded.shape == photo.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - photo).mean() < 3


def test_grayscale_becomes_three_equal_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    decoded = decode_image(encode(Image.fromarray(gray, "L"), "PNG"), "g")
    np.testing.assert_array_equal(decoded, np.repeat(gray[:, :, None], 3, axis=2))


def test_rgba_is_composited_on_white():
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    decoded = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), "t")
    np.testing.assert_array_equal(decoded[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(decoded[0, 1], [255, 255, 255])
    np.testing.assert_allclose(decoded[0, 2], [127, 127, 127], atol=1)


def test_gray_with_alpha_is_composited_on_white():
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), "LA")
    decoded = decode_image(encode(la, "PNG"), "la")
    np.testing.assert_array_equal(decoded[0], [[255, 255, 255], [0, 0, 0]])


def test_palette_image_takes_its_palette_colours():
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette_image.putpixel((1, 0), 1)
    decoded = decode_image(encode(palette_image, "PNG"), "p")
    np.testing.assert_array_equal(decoded[0], [[10, 20, 30], [200, 100, 50]])


def test_transparent_palette_entry_becomes_white():
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette_image.putpixel((1, 0), 1)
    decoded = decode_image(encode(palette_image, "PNG", transparency=0), "p")
    np.testing.assert_array_equal(decoded[0], [[255, 255, 255], [200, 100, 50]])


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    decoded = decode_image(data, "deep")
    np.testing.assert_array_equal(decoded[0, :, 0], [0, 100, 255])


def test_cmyk_jpeg_becomes_rgb():
    decoded = decode_image(encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"), "cmyk")
    np.testing.assert_allclose(decoded[1, 1], [255, 0, 0], atol=3)


def test_exif_orientation_is_applied():
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # landscape, left half red
    pixels[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    data = encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)
    decoded = decode_image(data, "rotated")
    expected = np.rot90(pixels, k=-1)  # clockwise: the red left half goes to the top
    assert decoded.shape == (40, 20, 3)
    assert np.abs(decoded.astype(int) - expected).mean() < 8


@pytest.mark.parametrize(
    "make_input, problem",
    [
        (lambda tmp: tmp / "missing.jpg", "file not found"),
        (lambda tmp: write(tmp / "empty.jpg", b""), "empty input (0 bytes)"),
        (lambda tmp: write(tmp / "notes.jpg", b"this is text, not a picture\n"), "not an image"),
        (
            lambda tmp: write(
                tmp / "cut.jpg", encode(Image.fromarray(skimage.data.chelsea()), "JPEG")[:5000]
            ),
            "truncated",
        ),
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: b"", "empty input"),
        (lambda tmp: np.zeros((4, 4), dtype=np.uint8), "arrays must be HxWx3 uint8 RGB"),
        (lambda tmp: np.zeros((4, 4, 3), dtype=np.float32), "arrays must be HxWx3 uint8 RGB"),
    ],
)
def test_bad_input_is_one_line_naming_it(tmp_path, make_input, problem):
    with pytest.raises(ImageError) as raised:
        decode_image(make_input(tmp_path), "the-input")
    message = str(raised.value)
    assert message.startswith("the-input: ") and problem in message and "\n" not in message


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_truncated_images_are_never_padded(monkeypatch):
    data = encode(Image.fromarray(skimage.data.coffee()), "JPEG")[:-200]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data, "cut")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(data, "cut")


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    with pytest.raises(ImageError, match="over the limit of 40000000"):
        decode_image(png_header_only(10_000, 5_000), "bomb")  # 50 M pixels, and no pixel data


def test_pixel_limit_is_configurable():
    data = encode(Image.new("RGB", (100, 50)), "PNG")
    assert decode_image(data, "ok", max_pixels=5_000).shape == (50, 100, 3)
    with pytest.raises(ImageError, match="5000 pixels, over the limit of 4999"):
        decode_image(data, "big", max_pixels=4_999)
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(np.zeros((50, 100, 3), dtype=np.uint8), "big", max_pixels=4_999)


def test_max_pixels_alone_governs_images_over_pillows_own_limit():
    # 200 Mpx: over Pillow's 179-Mpx refusal. Under a larger max_pixels, Pillow must not refuse it
    # (this header has no pixel data, so decoding then fails as truncated), and the global is restored.
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError) as raised:
        decode_image(png_header_only(20_000, 10_000), "big", max_pixels=10**9)
    assert "Pillow" not in str(raised.value) and "truncated" in str(raised.value)
    assert Image.MAX_IMAGE_PIXELS == before
    with pytest.raises(ImageError, match="200000000 pixels, over the limit of 100000000"):
        decode_image(png_header_only(20_000, 10_000), "big", max_pixels=10**8)


def test_describe_names_inputs():
    assert describe("a/b.jpg") == "a/b.jpg"
    assert describe(b"xx") == "<bytes>"
    assert describe(np.zeros(1), 3) == "<array #3>"


def test_resize_is_whole_image_bilinear_float():
    image = np.random.default_rng(1).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    resized = resize_for_model(image, (32, 24))
    assert resized.shape == (32, 24, 3) and resized.dtype == np.float32
    expected = cv2.resize(image, (24, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    np.testing.assert_array_equal(resized, expected)  # resized as uint8: no full-size float copy
    exact = cv2.resize(image.astype(np.float32), (24, 32), interpolation=cv2.INTER_LINEAR)
    assert np.abs(resized - exact).max() <= 1.0  # cv2's fixed-point uint8 bilinear
    np.testing.assert_array_equal(resize_for_model(image, (50, 80)), image.astype(np.float32))


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(decode_image, str(fifo), "pipe.png")
        with pytest.raises(ImageError, match="pipe.png: not a regular file"):
            future.result(timeout=5)


def test_endless_device_is_refused_without_reading():
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(decode_image, "/dev/zero", "/dev/zero")
        with pytest.raises(ImageError, match="/dev/zero: not a regular file"):
            future.result(timeout=5)


def test_float_tiff_of_0_to_1_is_scaled_and_larger_values_clipped():
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    pixels = decode_image(encode(Image.fromarray(values, mode="F"), "TIFF"), "float.tif")
    assert pixels[0, :, 0].tolist() == [0, 128, 255]
    large = np.array([[-5.0, 100.0, 300.0]], dtype=np.float32)
    pixels = decode_image(encode(Image.fromarray(large, mode="F"), "TIFF"), "float.tif")
    assert pixels[0, :, 0].tolist() == [0, 100, 255]


def test_any_exception_type_from_pillow_is_an_image_error(monkeypatch):
    def broken_load(self):
        raise TypeError("'bytes' object cannot be interpreted as an integer")
    data = encode(Image.new("RGB", (4, 4)), "PNG")
    monkeypatch.setattr(Image.Image, "load", broken_load)
    with pytest.raises(ImageError, match="x.tif: cannot decode image: TypeError: 'bytes'"):
        decode_image(data, "x.tif")


def test_pillow_warnings_name_the_image(monkeypatch):
    original = Image.Image.load
    def warning_load(self):
        warnings.warn("Corrupt EXIF data.  Expecting to read 12 bytes but only got 6.", UserWarning)
        return original(self)
    data = encode(Image.new("RGB", (4, 4)), "PNG")
    monkeypatch.setattr(Image.Image, "load", warning_load)
    with pytest.warns(UserWarning, match=r"^photo.jpg: Corrupt EXIF data\. Expecting"):
        decode_image(data, "photo.jpg")


def test_libtiff_stderr_lines_name_the_image(capfd):
    data = bytearray(encode(Image.new("RGB", (64, 64), (9, 9, 9)), "TIFF", compression="tiff_lzw"))
    data[-200:-100] = bytes(100)  # corrupt the tail (tags or strips)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            decode_image(bytes(data), "scan.tif")
        except ImageError as error:
            assert str(error).startswith("scan.tif: ") and "\n" not in str(error)
    assert capfd.readouterr().err == ""
    assert all(str(w.message).startswith("scan.tif: ") for w in caught)

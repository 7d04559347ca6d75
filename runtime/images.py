"""Decode images (path, bytes or array) into 8-bit RGB, and resize them for the model.

Decoding uses Pillow:
- EXIF orientation is applied (ImageOps.exif_transpose);
- grayscale, palette, CMYK and 16-bit images become 8-bit RGB (16-bit values are scaled by 1/257);
- transparent images (RGBA, LA, palette or PNG with transparency) are composited on WHITE;
- multi-frame files (GIF, TIFF) give their first frame.
The pixel limit (decompression bombs) is checked from the header, before any pixel is decoded.
Truncated files raise an error: this module refuses to decode while Pillow's
ImageFile.LOAD_TRUNCATED_IMAGES is set, since Pillow would then pad the missing part silently.
"""

import io
import os
import warnings

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError, one_line

DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Pillow raises any of these for a file it recognises but cannot decode.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray


def describe(image: ImageInput, position: int | None = None) -> str:
    """The name an input goes by in results and error messages."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    kind = "array" if isinstance(image, np.ndarray) else "bytes"
    return f"<{kind}>" if position is None else f"<{kind} #{position}>"


def decode_image(image: ImageInput, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode `image` into an HxWx3 uint8 RGB array; ImageError (naming `source`) if it can't be."""
    if isinstance(image, np.ndarray):
        return _check_array(image, source, max_pixels)
    if isinstance(image, (str, os.PathLike)):
        data = _read_file(image, source)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    else:
        raise ImageError(
            source, f"unsupported input type {type(image).__name__} (use a path, bytes or an array)"
        )
    if not data:
        raise ImageError(source, "empty input (0 bytes)")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ImageError(
            source, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; refusing to pad truncated images silently"
        )
    try:
        with warnings.catch_warnings():
            # The runtime applies its own limit below; Pillow's softer one would only warn.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                _check_pixels(opened.width, opened.height, source, max_pixels)
                opened.load()
                return _to_rgb(ImageOps.exif_transpose(opened))
    except Image.DecompressionBombError as error:
        raise ImageError(source, f"over Pillow's pixel limit ({one_line(error)})") from None
    except UnidentifiedImageError:
        raise ImageError(source, "not an image (unrecognised file format)") from None
    except DECODE_ERRORS as error:
        raise ImageError(source, f"cannot decode image: {one_line(error)}") from None


def resize_for_model(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole image resized to `size` (height, width) with bilinear interpolation
    (cv2.INTER_LINEAR, no crop, no padding): float32 RGB, raw 0..255."""
    height, width = size
    pixels = image.astype(np.float32)
    if pixels.shape[:2] == (height, width):
        return pixels
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)


def _read_file(path: str | os.PathLike, source: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise ImageError(source, "file not found") from None
    except IsADirectoryError:
        raise ImageError(source, "is a directory, not an image file") from None
    except OSError as error:
        raise ImageError(source, f"cannot read file: {error.strerror or one_line(error)}") from None


def _check_pixels(width: int, height: int, source: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            source,
            f"image is {width}x{height} = {width * height} pixels, "
            f"over the limit of {max_pixels} (max_pixels)",
        )


def _check_array(image: np.ndarray, source: str, max_pixels: int) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ImageError(source, f"arrays must be HxWx3 uint8 RGB, not {image.dtype} {image.shape}")
    _check_pixels(image.shape[1], image.shape[0], source, max_pixels)
    return np.ascontiguousarray(image)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode as HxWx3 uint8 RGB; transparency composited on white."""
    if image.mode in SIXTEEN_BIT_MODES:
        # Pillow's own conversion to 8 bits clips at 255 instead of scaling.
        values = np.asarray(image, dtype=np.float64)
        gray = np.rint(np.clip(values, 0, 65535) / 257).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))

"""Decode images (path, bytes or array) into 8-bit RGB, and resize them for the model.

Decoding uses Pillow:
- EXIF orientation is applied (ImageOps.exif_transpose);
- grayscale, palette, CMYK and 16-bit images become 8-bit RGB (16-bit values are scaled by 1/257);
- 32-bit float images (mode F, e.g. float TIFFs) are scaled 0..1 -> 0..255 when their maximum is
  at most 1, else clipped to 0..255 (NaN becomes 0);
- transparent images (RGBA, LA, palette or PNG with transparency) are composited on WHITE;
- multi-frame files (GIF, TIFF) give their first frame.
The pixel limit (decompression bombs) is checked from the header, before any pixel is decoded;
max_pixels alone governs it (Pillow's own limit is raised to it while decoding).
Paths must name regular files of at most MAX_FILE_BYTES (no FIFO, device or endless file is read).
Any failure to decode, whatever its exception type (MemoryError included), is an ImageError;
Pillow's warnings and libtiff's stderr lines are re-issued as one warning that names the image.
Truncated files raise an error: this module refuses to decode while Pillow's
ImageFile.LOAD_TRUNCATED_IMAGES is set, since Pillow would then pad the missing part silently.
One image is decoded at a time (warnings.catch_warnings is not thread-safe), and an Original
keeps an image as read, to be decoded again on demand rather than kept decoded.
"""

import io
import os
import re
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError, one_line
from .native_stderr import native_stderr

DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
MAX_FILE_BYTES = 1 << 30  # no image file worth decoding is larger; beyond it, refuse before reading
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
BAND_ROWS = 256  # rows of a decoded image converted to the array at a time
_DECODE_LOCK = threading.Lock()  # one decode at a time: catch_warnings swaps process-wide state

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray


def describe(image: ImageInput, position: int | None = None) -> str:
    """The name an input goes by in results and error messages."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    kind = "array" if isinstance(image, np.ndarray) else "bytes"
    return f"<{kind}>" if position is None else f"<{kind} #{position}>"


def read_image(image: ImageInput, source: str) -> bytes | np.ndarray:
    """What decode_image decodes: a path's file contents, bytes as bytes, an array as it is;
    ImageError (naming `source`) for another type or a file that cannot be read."""
    if isinstance(image, np.ndarray):
        return image
    if isinstance(image, (str, os.PathLike)):
        return read_file(image, source)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    raise ImageError(source, f"unsupported input type {type(image).__name__} (use a path, bytes or an array)")


def decode_image(image: ImageInput, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode `image` into an HxWx3 uint8 RGB array; ImageError (naming `source`) if it can't be."""
    data = read_image(image, source)
    if isinstance(data, np.ndarray):
        return _check_array(data, source, max_pixels)
    if not data:
        raise ImageError(source, "empty input (0 bytes)")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ImageError(
            source, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; refusing to pad truncated images silently"
        )
    capture = native_stderr() if data.startswith(TIFF_MAGIC) else nullcontext(None)
    try:
        with _DECODE_LOCK, warnings.catch_warnings(record=True) as caught, capture as native_log:
            warnings.simplefilter("always")
            # The runtime applies its own limit (max_pixels); Pillow's would only warn or refuse.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            pixels = _decode(data, source, max_pixels)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        # Pillow refuses only over twice its limit, and _pillow_limit raised that limit to at least
        # max_pixels: so this image is over max_pixels too.
        size = re.search(r"\((\d+) pixels\)", str(error))
        pixels_text = f"{size.group(1)} pixels" if size else "too many pixels"
        raise ImageError(source, f"image is {pixels_text}, over the limit of {max_pixels} (max_pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(source, "not an image (unrecognised file format)") from None
    except MemoryError:
        raise ImageError(source, "not enough memory to decode this image") from None
    except Exception as error:  # Pillow's plugins raise many types (TypeError, struct.error...)
        raise ImageError(source, f"cannot decode image: {type(error).__name__}: {one_line(error)}") from None
    _rewarn(source, [str(warning.message) for warning in caught], native_log)
    return pixels


def _decode(data: bytes, source: str, max_pixels: int) -> np.ndarray:
    with _pillow_limit(max_pixels), Image.open(io.BytesIO(data)) as opened:
        _check_pixels(opened.width, opened.height, source, max_pixels)
        opened.load()
        ImageOps.exif_transpose(opened, in_place=True)  # in place: no full-size copy
        return _to_rgb(opened)


@dataclass(frozen=True, eq=False)
class Original:
    """An image as read_image gave it (encoded bytes, or the array) and its decoded size: a 36 Mpx
    photo is a few MB as a JPEG and 108 MB decoded, so it is decoded again when needed."""

    data: bytes | np.ndarray  # an array is the decoded image itself
    source: str
    size: tuple[int, int]  # (height, width) decoded

    def decode(self) -> np.ndarray:
        """The HxWx3 uint8 RGB pixels, as the first decode gave them (its warnings not repeated)."""
        if isinstance(self.data, np.ndarray):
            return self.data
        capture = native_stderr() if self.data.startswith(TIFF_MAGIC) else nullcontext()
        with _DECODE_LOCK, warnings.catch_warnings(), capture:
            warnings.simplefilter("ignore")
            return _decode(self.data, self.source, self.size[0] * self.size[1])


def _rewarn(source: str, messages: list[str], native_log: io.StringIO | None) -> None:
    """Pillow's warnings and libtiff's stderr lines, as one warning line that names the image."""
    lines = messages + (native_log.getvalue().splitlines() if native_log is not None else [])
    lines = [one_line(Exception(line)) for line in lines if line.strip()]
    if lines:
        warnings.warn(f"{source}: {'; '.join(dict.fromkeys(lines))}", UserWarning, stacklevel=3)


# Pillow's own limit is a global (Image.MAX_IMAGE_PIXELS; it refuses over twice that). While any
# thread decodes with a larger max_pixels it is raised to the largest such request, then restored.
_LIMIT_LOCK = threading.Lock()
_LIMIT_REQUESTS: list[int] = []
_LIMIT_SAVED: list[int | None] = []


@contextmanager
def _pillow_limit(max_pixels: int) -> Iterator[None]:
    limit = Image.MAX_IMAGE_PIXELS if not _LIMIT_SAVED else _LIMIT_SAVED[0]
    if limit is None or max_pixels <= 2 * limit:
        yield
        return
    with _LIMIT_LOCK:
        if not _LIMIT_REQUESTS:
            _LIMIT_SAVED[:] = [Image.MAX_IMAGE_PIXELS]
        _LIMIT_REQUESTS.append(max_pixels)
        Image.MAX_IMAGE_PIXELS = max(_LIMIT_REQUESTS)
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _LIMIT_REQUESTS.remove(max_pixels)
            if _LIMIT_REQUESTS:
                Image.MAX_IMAGE_PIXELS = max(_LIMIT_REQUESTS)
            else:
                Image.MAX_IMAGE_PIXELS = _LIMIT_SAVED.pop()


def resize_for_model(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole image resized to `size` (height, width) with bilinear interpolation
    (cv2.INTER_LINEAR, no crop, no padding): float32 RGB, raw 0..255. The resize runs on
    the uint8 pixels, so no full-size float copy is made."""
    height, width = size
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return image.astype(np.float32)


def read_file(path: str | os.PathLike, source: str) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES; never opens a FIFO or a device
    (opening a FIFO blocks) and never reads past the size (an endless or growing file).
    ImageError (naming `source`) otherwise: every front end reads local images through this."""
    try:
        status = os.stat(path)
        if stat.S_ISDIR(status.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(status.st_mode):
            raise ImageError(source, "not a regular file (a FIFO, socket or device); give an image file")
        with open(path, "rb", buffering=0) as file:
            return read_stream(file, status.st_size, source)
    except FileNotFoundError:
        raise ImageError(source, "file not found") from None
    except IsADirectoryError:
        raise ImageError(source, "is a directory, not an image file") from None
    except (OSError, ValueError) as error:  # ValueError: a path with a NUL byte
        raise ImageError(source, f"cannot read file: {getattr(error, 'strerror', None) or one_line(error)}") from None


def read_stream(stream: BinaryIO, size: int, source: str) -> bytes:
    """At most MAX_FILE_BYTES from an open binary `stream` whose file announced `size` bytes:
    refused from the size before reading, and never read past the limit (a growing file)."""
    if size > MAX_FILE_BYTES:
        raise ImageError(source, f"file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(source, f"file grew over the {MAX_FILE_BYTES}-byte limit while read")
    return data


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
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        gray = np.rint(np.clip(values * scale, 0, 255)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in SIXTEEN_BIT_MODES:
        # Pillow's own conversion to 8 bits clips at 255 instead of scaling.
        values = np.asarray(image, dtype=np.float64)
        gray = np.rint(np.clip(values, 0, 65535) / 257).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return _rgb_by_bands(image)


def _rgb_by_bands(image: Image.Image) -> np.ndarray:
    """image.convert("RGB") as HxWx3 uint8, BAND_ROWS rows at a time: converting the whole image
    to an array at once holds two more full-size copies (Pillow's tobytes joins its chunks)."""
    pixels = np.empty((image.height, image.width, 3), np.uint8)
    for top in range(0, image.height, BAND_ROWS):
        band = image.crop((0, top, image.width, min(top + BAND_ROWS, image.height)))
        pixels[top:top + BAND_ROWS] = np.asarray(band.convert("RGB"))
    return pixels

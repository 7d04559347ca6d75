"""Lossless PNG files of uint8 images, fast: each row Sub-filtered by numpy, the rows deflated by
ISA-L (python-isal) at level 1, in bands, as IDAT chunks.

Why not cv2.imencode: on a 512x512 overlay (2026-12-05, OpenCV 5.1, isal 1.9) its fastest
lossless settings (zlib level 1, Huffman only, the Sub filter) took 14 ms and 411 KB; this takes
2.7 ms for the same size. zlib's Huffman coder is the cost, and ISA-L's level 1 is five times
faster at the same ratio. Pillow (24 ms), libpng and libspng through imagecodecs (20-24 ms),
zlib-ng (5 ms Huffman only) and libdeflate (5 ms at level 1) were slower. The format is small
(PNG specification, ISO/IEC 15948): a signature, IHDR, IDAT chunks that together hold one zlib
stream of filtered rows, IEND.
"""

import struct

import numpy as np
from isal import isal_zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type: greyscale, RGB
SUB_FILTER = 1  # each byte minus the byte one pixel to its left
DEFLATE_LEVEL = 1
BAND_BYTES = 1 << 20  # rows filtered and deflated at a time: the temporaries stay small at any size


def encode_png(image: np.ndarray) -> bytearray:
    """A HxW (greyscale) or HxWx3 (RGB) uint8 image as the bytes of a PNG file."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.shape[2:] not in ((), (3,)) or 0 in image.shape:
        raise ValueError(f"PNG: a non-empty HxW or HxWx3 uint8 image, not {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else 3
    png = bytearray(SIGNATURE)
    _append_chunk(png, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, COLOUR_TYPE[channels], 0, 0, 0))
    compressor = isal_zlib.compressobj(DEFLATE_LEVEL)
    rows = max(1, BAND_BYTES // (width * channels + 1))
    for top in range(0, height, rows):
        _append_chunk(png, b"IDAT", compressor.compress(_sub_filtered(image[top : top + rows], channels)))
    _append_chunk(png, b"IDAT", compressor.flush())
    _append_chunk(png, b"IEND", b"")
    return png


def _sub_filtered(rows: np.ndarray, channels: int) -> np.ndarray:
    """Rows as PNG scanlines with the Sub filter: a filter-type byte, then each byte minus the one
    `channels` bytes to its left (modulo 256; the first pixel as it is)."""
    flat = rows.reshape(rows.shape[0], -1)
    lines = np.empty((flat.shape[0], flat.shape[1] + 1), np.uint8)
    lines[:, 0] = SUB_FILTER
    lines[:, 1 : channels + 1] = flat[:, :channels]
    np.subtract(flat[:, channels:], flat[:, :-channels], out=lines[:, channels + 1 :])
    return lines


def _append_chunk(png: bytearray, kind: bytes, data: bytes) -> None:
    """Length, type, data and the CRC-32 of type and data; an empty IDAT is left out."""
    if kind == b"IDAT" and not data:
        return
    png += struct.pack(">I", len(data))
    png += kind
    png += data
    png += struct.pack(">I", isal_zlib.crc32(data, isal_zlib.crc32(kind)))

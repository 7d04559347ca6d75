"""Heatmaps, colour and encoding: normalise, upsample, fuse, JET overlay, peak, contact sheets,
PNG/JPEG/WebP and .npy bytes (written by runtime.writer)."""

import io
from collections.abc import Sequence

import cv2
import numpy as np

from .png import encode_png

OVERLAY_ALPHA = 0.4
OVERLAY_ROWS = 256  # rows coloured and blended at a time: the temporaries stay small at any image size
SHEET_TILE_HEIGHT = 256
SHEET_TILE_MAX_WIDTH = 4 * SHEET_TILE_HEIGHT  # a 1x10000 image makes a 1024x1 tile, not 256x2,560,000
JPEG_QUALITY = 95
WEBP_QUALITY = 90


def normalise(raw_map: np.ndarray) -> np.ndarray:
    """ReLU(raw_map) divided by its maximum, however small, as float32 in 0..1. A map with no
    positive value, or with a non-finite one, has no scale: it becomes all zero."""
    raw = np.maximum(raw_map.astype(np.float64), 0)
    top = float(raw.max())
    if not (np.isfinite(top) and top > 0):
        return np.zeros(raw.shape, np.float32)
    return (raw / top).astype(np.float32)


def heatmap(raw_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """normalise(raw_map), upsampled bilinearly (cv2.INTER_LINEAR) to `size` (height, width):
    float32 in 0..1."""
    normalised = normalise(raw_map)
    height, width = size
    upsampled = cv2.resize(normalised, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(upsampled, 0, 1, out=upsampled)


def fuse(raw_maps: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """The mean of heatmap(m, size) over raw maps of one class and image: one per target layer
    (and per test-time augmentation, flipped back). pytorch-grad-cam's aggregate_multi_layers
    without its final rescale, so that one map gives exactly heatmap(m, size); where the maps
    disagree the fused map stays below 1."""
    total = heatmap(raw_maps[0], size)
    for raw_map in raw_maps[1:]:
        total += heatmap(raw_map, size)
    total /= np.float32(len(raw_maps))
    return total


def low_resolution(raw_maps: Sequence[np.ndarray]) -> np.ndarray:
    """fuse(raw_maps) at the largest raw map's own size: the normalised map before upsampling."""
    finest = max(raw_maps, key=lambda raw_map: raw_map.size)
    return fuse(raw_maps, finest.shape)


def peak(heat: np.ndarray) -> tuple[int, int]:
    """(x, y) of the heatmap's maximum; the first one in row order on ties."""
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(x), int(y)


# OpenCV's JET in RGB order, as a 256x1 colour table for cv2.applyColorMap: one call, no cvtColor.
JET_RGB = np.ascontiguousarray(
    cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET)[:, :, ::-1]
)


def jet(heat: np.ndarray) -> np.ndarray:
    """The JET colour of a 0..1 heatmap, HxWx3 uint8 RGB: level rint(heat * 255)."""
    levels = cv2.convertScaleAbs(np.ascontiguousarray(heat, np.float32), alpha=255)  # rounds half to even, as np.rint
    return cv2.applyColorMap(levels, JET_RGB)


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """clip(rint(jet(heat) * 0.4 + image), 0, 255) as HxWx3 uint8 RGB; `heat` has the image's size.
    cv2.addWeighted computes exactly that on uint8 (0.4 * level never ends in .5), ten times faster
    than numpy float32; OVERLAY_ROWS rows at a time, so no full-size temporary is made."""
    image = np.ascontiguousarray(image)
    blended = np.empty(image.shape, np.uint8)
    for top in range(0, image.shape[0], OVERLAY_ROWS):
        rows = slice(top, top + OVERLAY_ROWS)
        blended[rows] = cv2.addWeighted(jet(heat[rows]), OVERLAY_ALPHA, image[rows], 1.0, 0.0)
    return blended


def contact_sheet(rows: Sequence[Sequence[tuple[str, np.ndarray]]]) -> np.ndarray:
    """(caption, HxWx3 uint8 RGB) tiles of one size side by side, rows stacked; each tile scaled
    to SHEET_TILE_HEIGHT pixels high, or SHEET_TILE_MAX_WIDTH wide if that is less, its caption
    written in its top-left corner."""
    height, width = rows[0][0][1].shape[:2]
    scale = min(SHEET_TILE_HEIGHT / height, SHEET_TILE_MAX_WIDTH / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    tiles = [
        [_captioned(cv2.resize(tile, size, interpolation=cv2.INTER_AREA), caption) for caption, tile in row]
        for row in rows
    ]
    return np.vstack([np.hstack(row) for row in tiles])


def _captioned(tile: np.ndarray, caption: str) -> np.ndarray:
    """White text with a black outline, legible on any colour."""
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(tile, caption, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, colour, thickness, cv2.LINE_AA)
    return tile


def encoded_image(image: np.ndarray, file_format: str = "png", consume: bool = False) -> memoryview:
    """An RGB uint8 image as the bytes of a png (runtime.png: lossless, fast), jpg or webp file:
    a view of the encoder's buffer, not a copy (tens of MB at 36 Mpx). consume: the caller is
    done with `image`; for jpg and webp its channels are swapped to OpenCV's BGR in place instead
    of in a copy."""
    if file_format == "png":
        return memoryview(encode_png(image))
    options = {"jpg": [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY], "webp": [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY]}[file_format]
    if consume and image.flags.c_contiguous:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR, dst=image)
    else:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(f".{file_format}", bgr, options)
    if not ok:
        raise OSError(f"{file_format} encoding failed")
    return memoryview(encoded.reshape(-1))


def npy_parts(array: np.ndarray) -> tuple[bytes, memoryview]:
    """An array's .npy file (np.save's, in C order) as its header and a view of its data: written
    one after the other, the array is never copied."""
    array = np.asarray(array, order="C")  # not ascontiguousarray: it makes a 0-d array 1-d
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.getvalue(), memoryview(array.reshape(-1).view(np.uint8))


def encoded_npy(array: np.ndarray) -> bytes:
    """An array as the bytes of a .npy file, in one piece (npy_parts joined)."""
    return b"".join(npy_parts(array))


"""--boxes: {"IMAGE": {"CLASS": [[x0, y0, x1, y1], ...]}}, inclusive pixels of the original image.
Read and checked entry by entry; an image is matched by its path, then by its file name when
exactly one entry has that name."""

import json
import math
import os
from pathlib import Path

from ..errors import OnnxcamError, one_line

FORMAT = '{"IMAGE": {"CLASS": [[x0, y0, x1, y1], ...]}}'


def read(path: str) -> dict[str, dict[str, list[list[float]]]]:
    """The boxes file, every entry checked; OnnxcamError (one line naming the entry) if not."""
    try:
        boxes = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise OnnxcamError(f"{path}: cannot read boxes: {one_line(error)}") from None
    if not isinstance(boxes, dict):
        raise OnnxcamError(f"{path}: boxes must be a JSON object {FORMAT}")
    for image, per_class in boxes.items():
        if not isinstance(per_class, dict):
            raise OnnxcamError(f"{path}: entry {image!r}: {_short(per_class)} is not an object "
                               '{"CLASS": [[x0, y0, x1, y1], ...]}')
        for key, found in per_class.items():
            where = f"{path}: entry {image!r}, class {key!r}"
            if not key.strip().isdigit():
                raise OnnxcamError(f"{where}: the class must be a class index (0, 1, ...)")
            if not isinstance(found, list) or not all(_is_box(box) for box in found):
                raise OnnxcamError(f"{where}: {_short(found)} is not a list of boxes [[x0, y0, x1, y1], ...] "
                                   "with x0 <= x1, y0 <= y1")
    return {image: {str(int(key)): found for key, found in per_class.items()} for image, per_class in boxes.items()}


def _is_box(box: object) -> bool:
    return (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
            and box[0] <= box[2] and box[1] <= box[3])


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class BoxLookup:
    """The entry of an image: its path as given, the same path normalised, or its file name when
    exactly one entry has that name."""

    def __init__(self, boxes: dict) -> None:
        self.boxes = boxes
        self.by_path = {os.path.normpath(key): key for key in boxes}
        by_name: dict[str, list[str]] = {}
        for key in boxes:
            by_name.setdefault(os.path.basename(key), []).append(key)
        self.by_name = {name: keys[0] for name, keys in by_name.items() if len(keys) == 1}

    def find(self, source: str) -> dict | None:
        key = source if source in self.boxes else self.by_path.get(os.path.normpath(source))
        key = key or self.by_name.get(os.path.basename(source))
        return None if key is None else self.boxes[key]

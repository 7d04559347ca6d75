"""Output file names, in one place: per image a stem, per map
<stem>_<which>_<label>[_<method>]_overlay.<format> and _heatmap.npy, per image <stem>_grid.png;
every name short enough for the file system, no two images on the same stem."""

import os
import re
from collections.abc import Sequence

from .results import ClassMap

DEFAULT_NAME_MAX = 255
LABEL_MAX = 64  # characters of a label kept in a file name
LONGEST_SUFFIX = 128  # bytes kept for _top<k>_<label ≤64>_<method>_heatmap.npy after a stem


def name_max(folder: str) -> int:
    """The longest file name, in bytes, that `folder`'s file system allows."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def shortened(stem: str, limit: int) -> str:
    """`stem` cut to at most `limit` bytes in the file system's encoding (whole characters)."""
    encoded = os.fsencode(stem)
    if len(encoded) <= limit:
        return stem
    cut = encoded[:limit]
    while cut:
        try:
            cut.decode("utf-8")
            break
        except UnicodeDecodeError as error:
            if error.start < len(cut) - 4:  # invalid in the middle: the name was not UTF-8 anyway
                break
            cut = cut[: error.start]
    return os.fsdecode(cut) or "image"


def output_stems(sources: Sequence[str], limit: int = DEFAULT_NAME_MAX - LONGEST_SUFFIX) -> dict[str, str]:
    """Each source's file stem, cut to `limit` bytes; different files with the same stem get -2,
    -3, ... so that no output overwrites another."""
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for source in sources:
        if source in stems:
            continue
        base = shortened(os.path.splitext(os.path.basename(os.path.normpath(source)))[0] or "image", limit)
        stem, count = base, 1
        while stem in taken:
            count += 1
            stem = f"{shortened(base, limit - len(str(count)) - 1)}-{count}"
        stems[source] = stem
        taken.add(stem)
    return stems


def safe_label(label: str, class_index: int) -> str:
    """A label usable in a file name: letters, digits, '.', '-', '_' only."""
    return re.sub(r"[^\w.-]+", "_", label, flags=re.ASCII).strip("._")[:LABEL_MAX] or f"class{class_index}"


def map_files(
    folder: str,
    stem: str,
    class_map: ClassMap,
    method: str | None,
    given_classes: bool,
    overlay_format: str,
    heatmap: bool,
) -> tuple[str, str | None]:
    """The (overlay, heatmap or None) paths of one map. <which>: c<N> for a class given by the
    user, else top<rank>; method: in the name, or None to leave it out."""
    which = f"c{class_map.class_index}" if given_classes else f"top{class_map.rank}"
    tag = f"_{method}" if method is not None else ""
    prefix = os.path.join(folder, f"{stem}_{which}_{safe_label(class_map.label, class_map.class_index)}{tag}")
    return f"{prefix}_overlay.{overlay_format}", f"{prefix}_heatmap.npy" if heatmap else None


def grid_file(folder: str, stem: str) -> str:
    """The path of an image's grid of overlays."""
    return os.path.join(folder, f"{stem}_grid.png")

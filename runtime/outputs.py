"""One image's files: overlays, heatmaps and grid, rendered and encoded one at a time, written
as one set (all or none)."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from . import naming
from .render import contact_sheet, encoded_image, npy_parts
from .render import overlay as render_overlay
from .results import Explanation
from .writer import Buffer, write_set

Files = list[list[tuple[str, str | None]]]  # per method, per map: (overlay, heatmap or None)


@dataclass(frozen=True)
class OutputOptions:
    """What to write per image, and where."""

    folder: str
    name_method: bool  # put the method in the file names
    given_classes: bool  # name maps c<N> (classes given) rather than top<k>
    overlay_format: str  # png, jpg or webp
    heatmaps: str  # full, low or none
    grid: bool


def write_image(
    explanations: Sequence[Explanation], stem: str, options: OutputOptions
) -> tuple[Files, str | None]:
    """Write one image's overlays, heatmaps and grid as one set (all or none), each rendered
    and encoded as it is written; returns per method the (overlay, heatmap or None) paths, and
    the grid's."""
    files = [
        [
            naming.map_files(
                options.folder, stem, class_map, explanation.method if options.name_method else None,
                options.given_classes, options.overlay_format, options.heatmaps != "none",
            )
            for class_map in explanation.maps
        ]
        for explanation in explanations
    ]
    grid = naming.grid_file(options.folder, stem) if options.grid else None
    write_set(encoded_files(explanations, files, grid, options))
    return files, grid


def encoded_files(
    explanations: Sequence[Explanation], files: Files, grid: str | None, options: OutputOptions
) -> Iterator[tuple[str, Buffer | tuple[Buffer, ...]]]:
    """(path, data) of each file, made when asked for (data: an encoded file's buffer, or a .npy's
    header and data as two parts): the decoded image and one full-size map (heatmap, then overlay)
    at a time, whatever the number of maps."""
    image = explanations[0].image  # every method explains the same image
    maps = [(class_map, map_files) for explanation, paths in zip(explanations, files, strict=True)
            for class_map, map_files in zip(explanation.maps, paths, strict=True)]
    for position, (class_map, (overlay_path, heatmap_path)) in enumerate(maps, 1):
        heat = class_map.heatmap
        if heatmap_path is not None:
            yield heatmap_path, npy_parts(heat if options.heatmaps == "full" else class_map.cam)
        overlay = render_overlay(image, heat)
        del heat
        if position == len(maps) and grid is None:
            del image  # not held while the last overlay is encoded
        yield overlay_path, encoded_image(overlay, options.overlay_format, consume=True)
        del overlay
    if grid is not None:
        yield grid, encoded_image(grid_sheet(explanations, image), "png", consume=True)


def grid_sheet(explanations: Sequence[Explanation], image: np.ndarray) -> np.ndarray:
    """One row per explained class: the image (captioned with the class) then each method's
    overlay (captioned with the method)."""
    return contact_sheet([
        [(class_map.label, image)]
        + [(explanation.method, render_overlay(image, explanation.maps[k].heatmap)) for explanation in explanations]
        for k, class_map in enumerate(explanations[0].maps)
    ])


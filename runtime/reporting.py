"""What the CLI prints per image: a JSON line (results.record plus the files written) or a short
table whose columns line up; and the progress bar."""

import json
import sys
from collections.abc import Sequence

from .commandline import shown
from .model_card import ModelCard
from .outputs import Files
from .results import Explanation, record

PREDICTION_INDENT = " " * 7  # as wide as "  map  ": class indices and labels line up


def format_result(
    explanations: Sequence[Explanation],
    files: Files,
    grid: str | None,
    as_json: bool,
    card: ModelCard | None = None,
) -> str:
    """One image explained by one or more methods: one JSON line (results.record, each map with
    its overlay and heatmap files, and the grid), or a table."""
    paths = [paths for method_files in files for paths in method_files]
    if as_json:
        document = record(explanations, card)
        for entry, (overlay, heatmap) in zip(document["maps"], paths, strict=True):
            entry.update(overlay=overlay, heatmap=heatmap)
        return json.dumps(document | ({"grid": grid} if grid else {}))
    return table(explanations, [overlay for overlay, _ in paths], grid)


def table(explanations: Sequence[Explanation], overlays: Sequence[str], grid: str | None) -> str:
    """The image; per prediction its class index, label and probability; per map its class index,
    label, method, rank among the image's classes (1 = the most probable), peak and overlay file:

        photos/cat.jpg
                  281  tabby      61.23%
                  285  Egyptian_cat  9.80%
          map     281  tabby      gradcam    rank 1  peak (x=120, y=88)  out/cat_top1_tabby_overlay.png
          map     281  tabby      gradcam++  rank 1  peak (x=96, y=80)   out/cat_top1_tabby_gradcam++_overlay.png
    """
    first = explanations[0]
    maps = [(explanation.method, class_map) for explanation in explanations for class_map in explanation.maps]
    label_width = max(len(label) for label in [p.label for p in first.predictions] + [m.label for _, m in maps])
    columns = [(method, f"rank {m.rank}", f"peak (x={m.peak[0]}, y={m.peak[1]})") for method, m in maps]
    widths = [max(len(row[i]) for row in columns) for i in range(3)]
    lines = [shown(first.source)]
    lines += [
        f"{PREDICTION_INDENT}{p.index:>6}  {p.label:<{label_width}}  {p.probability:7.2%}" for p in first.predictions
    ]
    for (_, m), row, overlay in zip(maps, columns, overlays, strict=True):
        cells = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append(f"  map  {m.class_index:>6}  {m.label:<{label_width}}  {cells}  {shown(overlay)}")
    lines += [f"  grid {shown(grid)}"] if grid else []
    return "\n".join(lines)


def progress_bar(total: int):
    """A tqdm bar on stderr. tqdm is imported only here, when a bar shows: it takes 35 ms to
    import, 1.5% of a 32-photo run."""
    from tqdm import tqdm

    return tqdm(total=total, unit="image", file=sys.stderr)

"""report.md (methods x metrics, 95 % bootstrap intervals over images), metrics.json and
curves.png, each written atomically."""

import json
import os
import uuid
from pathlib import Path

import cv2
import numpy as np

from .run import METRICS, Results
from .sanity import DEFAULT_THRESHOLD, flagged

BOOTSTRAP_RESAMPLES = 1000
BETTER = {"deletion": "lower", "deletion-blur": "lower", "insertion": "higher", "average-drop": "lower",
          "increase-in-confidence": "higher", "pointing-game": "higher"}
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def bootstrap(values: list[float], seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """The mean and its 95 % percentile bootstrap interval (resampling the values)."""
    data = np.asarray(values, dtype=np.float64)
    means = data[np.random.default_rng(seed).integers(0, len(data), (resamples, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(data.mean()), "low": float(low), "high": float(high), "n": len(data)}


def summary(results: Results, seed: int = 0, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Everything metrics.json holds."""
    methods = {
        name: {metric: bootstrap(values[metric], seed) for metric in METRICS if values.get(metric)}
        for name, values in results.values.items()
    }
    curves = {
        name: {metric: (total / len(results.values[name][metric])).tolist() for metric, total in per.items()}
        for name, per in results.curves.items()
    }
    checks = {
        name: {"spearman": float(np.mean(c)), "flagged": flagged(np.array(c), threshold)}
        for name, c in results.correlations.items()
    }
    return {"images": results.images, "skipped": len(results.skipped), "skipped_errors": results.skipped,
            "better": BETTER, "methods": methods, "curves": curves,
            "sanity": {"threshold": threshold, "methods": checks} if checks else None}


def markdown(data: dict) -> str:
    """report.md: a table of mean [95 % interval] per method and metric, and the sanity check."""
    metrics = [m for m in METRICS if any(m in per for per in data["methods"].values())]
    lines = [
        f"# Faithfulness of each map ({data['images']} images, {data['skipped']} skipped)", "",
        "| method | " + " | ".join(f"{m} ({BETTER[m]} is better)" for m in metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for name, per in data["methods"].items():
        cells = [f"{per[m]['mean']:.3f} [{per[m]['low']:.3f}, {per[m]['high']:.3f}]" if m in per else "-"
                 for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Mean over images and classes [95 % bootstrap interval]. average-drop and "
              "increase-in-confidence in %; pointing-game the fraction of hits."]
    if data["sanity"]:
        lines += ["", f"## Sanity check: Spearman correlation with the random model's maps "
                  f"(flagged above {data['sanity']['threshold']})", "", "| method | spearman | flagged |",
                  "|---|---|---|"]
        for name, check in data["sanity"]["methods"].items():
            lines.append(f"| {name} | {check['spearman']:.3f} | {'FLAGGED' if check['flagged'] else 'ok'} |")
    if data["skipped_errors"]:
        lines += ["", "## Skipped images", ""] + [f"- {error}" for error in data["skipped_errors"]]
    return "\n".join(lines) + "\n"


def curves_image(curves: dict, size: tuple[int, int] = (360, 480)) -> np.ndarray:
    """Deletion (to black, to the blur) and insertion curves side by side, one coloured line per
    method, with a legend: HxWx3 uint8 BGR (OpenCV)."""
    height, width = size
    panels = []
    for metric in ("deletion", "deletion-blur", "insertion"):
        panel = np.full((height, width, 3), 255, np.uint8)
        left, top, right, bottom = 40, 30, width - 130, height - 30
        cv2.rectangle(panel, (left, top), (right, bottom), (0, 0, 0), 1)
        cv2.putText(panel, f"{metric} (x: fraction 0..1, y: probability 0..1)", (left, 20),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for i, (name, per) in enumerate(curves.items()):
            if metric not in per:
                continue
            values = np.asarray(per[metric])
            xs = left + np.linspace(0, 1, len(values)) * (right - left)
            ys = bottom - np.clip(values, 0, 1) * (bottom - top)
            colour = COLOURS[i % len(COLOURS)][::-1]
            cv2.polylines(panel, [np.stack([xs, ys], 1).astype(np.int32)], False, colour, 2, cv2.LINE_AA)
            cv2.putText(panel, name, (right + 8, top + 15 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        colour, 1, cv2.LINE_AA)
        panels.append(panel)
    return np.hstack(panels)


def examples_image(examples: list, cell: int = 128) -> np.ndarray:
    """One row per image: the image, then each map (JET) over it, named: HxWx3 uint8 BGR."""
    rows = []
    for image, maps in examples:
        picture = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (cell, cell))
        cells = [picture]
        for name, saliency in maps.items():
            scaled = np.uint8(255 * np.clip(cv2.resize(saliency.astype(np.float32), (cell, cell)), 0, 1))
            blended = cv2.addWeighted(picture, 0.5, cv2.applyColorMap(scaled, cv2.COLORMAP_JET), 0.5, 0)
            cv2.putText(blended, name, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
            cells.append(blended)
        rows.append(np.hstack(cells))
    return np.vstack(rows)


def write(out: Path, data: dict, examples: list | None = None) -> None:
    """report.md, metrics.json, curves.png and (with examples) examples.png in `out`, atomically."""
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / "metrics.json", json.dumps(data, indent=2).encode())
    _atomic(out / "report.md", markdown(data).encode())
    if data["curves"]:
        ok, png = cv2.imencode(".png", curves_image(data["curves"]))
        _atomic(out / "curves.png", png.tobytes())
    if examples:
        ok, png = cv2.imencode(".png", examples_image(examples))
        _atomic(out / "examples.png", png.tobytes())


def _atomic(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_bytes(content)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)

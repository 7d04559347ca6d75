"""report.md (methods x metrics, 95 % bootstrap intervals over images), metrics.json and
curves.png, each written atomically."""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..writer import write_set
from .run import Results
from .baselines import BASELINES
from .sanity import DEFAULT_THRESHOLD, flagged

BOOTSTRAP_RESAMPLES = 1000
# every value column, in report order: which way is better, and what it is
COLUMNS = {
    "deletion": ("lower", "RISE deletion AUC: the most salient pixels set to the model input's zero"),
    "insertion": ("higher", "RISE insertion AUC: the most salient pixels revealed over RISE's blur"),
    "road": ("higher", "pytorch-grad-cam's ROADCombined: (road-lerf - road-morf) / 2"),
    "road-morf": ("lower", "ROAD most relevant first: probability change, mean over 10..90 % imputed"),
    "road-lerf": ("higher", "ROAD least relevant first: probability change, mean over 10..90 % imputed"),
    "average-drop": ("lower", "torchcam / Grad-CAM++ average drop, % of the probability"),
    "increase-in-confidence": ("higher", "torchcam / Grad-CAM++ increase in confidence, % of the images"),
    "drop-in-confidence": ("lower", "pytorch-grad-cam's DropInConfidence: max(0, Y - O), probability"),
    "confidence-change": ("higher", "pytorch-grad-cam's CamMultImageConfidenceChange: O - Y, probability"),
    "pointing-game": ("higher", "pointing game: fraction of maps whose maximum is in a box of the class"),
    "insertion-torchcam": ("higher", "torchcam insertion AUC: revealed over the model input's zero"),
    "deletion-blur": ("lower", "ours: deletion to the image blurred (sigma 5) instead of to zero"),
}
BETTER = {name: better for name, (better, _) in COLUMNS.items()}
CURVE_METRICS = ("deletion", "insertion", "insertion-torchcam", "deletion-blur")


@dataclass(frozen=True)
class ModelInfo:
    path: str
    sha256: str
    layers: tuple[str, ...]
    random_weights: bool
    preprocessing: str


@dataclass(frozen=True)
class RunInfo:
    """What report.md says the run was."""

    model: ModelInfo
    images: list[str]
    methods: list[str]
    metrics: list[str]
    steps: int
    seed: int
    top_k: int
    classes: list[int] | None
    random_model: str | None


def bootstrap(values: list[float], seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """The mean and its 95 % percentile bootstrap interval (resampling the values)."""
    data = np.asarray(values, dtype=np.float64)
    means = data[np.random.default_rng(seed).integers(0, len(data), (resamples, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(data.mean()), "low": float(low), "high": float(high), "n": len(data)}


def summary(results: Results, seed: int = 0, threshold: float = DEFAULT_THRESHOLD, run: RunInfo | None = None) -> dict:
    """Everything metrics.json holds; "values": per map and metric, the value of each image and
    class in the order evaluated (for paired comparisons), "methods" their means and intervals."""
    methods = {
        name: {metric: bootstrap(values[metric], seed) for metric in COLUMNS if values.get(metric)}
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
    return {"run": dataclasses.asdict(run) if run else None, "images": results.images,
            "skipped": len(results.skipped), "skipped_errors": results.skipped, "unboxed": results.unboxed,
            "better": BETTER, "values": results.values, "methods": methods, "curves": curves,
            "sanity": {"threshold": threshold, "methods": checks} if checks else None}


def markdown(data: dict) -> str:
    """report.md: what was run, a table of mean [95 % interval] per map and metric, what each
    column is (only those run), the sanity check."""
    columns = [m for m in COLUMNS if any(m in per for per in data["methods"].values())]
    lines = [f"# Faithfulness of each map ({data['images']} images, {data['skipped']} skipped)", ""]
    run = data["run"]
    if run:
        model = run["model"]
        if model["random_weights"]:
            lines += [f"> **Warning: {model['path']} has random weights (exported with --weights none): its maps "
                      "and these figures explain nothing.**", ""]
        explained = (f"classes {', '.join(map(str, run['classes']))}" if run["classes"]
                     else f"the top {run['top_k']} class{'es' if run['top_k'] > 1 else ''}")
        lines += [
            f"- model: `{model['path']}`, sha256 `{model['sha256']}`, layer{'s' if len(model['layers']) > 1 else ''} "
            f"{', '.join(f'`{layer}`' for layer in model['layers'])}, preprocessing {model['preprocessing']}, "
            f"weights {'random' if model['random_weights'] else 'trained'}",
            f"- images ({len(run['images'])}): {', '.join(f'`{name}`' for name in run['images'])}",
            f"- maps of {explained}; methods {', '.join(run['methods'])}; baselines {', '.join(BASELINES)}",
            f"- metrics {', '.join(run['metrics'])}; steps {run['steps']}; seed {run['seed']}"
            + (f"; sanity model `{run['random_model']}`" if run["random_model"] else ""),
            "",
        ]
    lines += ["| map | " + " | ".join(f"{m} ({BETTER[m]} is better)" for m in columns) + " |",
              "|---" * (len(columns) + 1) + "|"]
    for name, per in data["methods"].items():
        cells = [f"{per[m]['mean']:.3f} [{per[m]['low']:.3f}, {per[m]['high']:.3f}]" if m in per else "-"
                 for m in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Mean over images and classes [95 % bootstrap interval over them]. Baselines: random-cam "
              "(pytorch-grad-cam's RandomCAM: random channel weights), layer-noise (noise at the layer's "
              "resolution, upsampled as the maps are), pixel-noise (per-pixel noise: its holes break a model "
              "whatever the order, so it is no fair CAM baseline), gaussian (centred), edge (Sobel).", ""]
    lines += [f"- **{m}**: {COLUMNS[m][1]}" for m in columns]
    if data["sanity"]:
        lines += ["", f"## Sanity check: Spearman correlation with the random model's maps "
                  f"(flagged above {data['sanity']['threshold']})", "", "| map | spearman | flagged |",
                  "|---|---|---|"]
        for name, check in data["sanity"]["methods"].items():
            lines.append(f"| {name} | {check['spearman']:.3f} | {'FLAGGED' if check['flagged'] else 'ok'} |")
    if data.get("unboxed"):
        lines += ["", "## Images without a box (no pointing game)", ""] + [f"- `{n}`" for n in data["unboxed"]]
    if data["skipped_errors"]:
        lines += ["", "## Skipped images", ""] + [f"- {error}" for error in data["skipped_errors"]]
    return "\n".join(lines) + "\n"


# Okabe-Ito colours (distinguishable with colour blindness), BGR; methods solid, baselines dashed
PALETTE = [(178, 114, 0), (0, 94, 213), (115, 158, 0), (167, 121, 204), (233, 180, 86), (66, 228, 240),
           (0, 159, 230), (0, 0, 0)]
FONT, FONT_SCALE, TEXT = cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0)
PANEL, MARGIN = (420, 520), (60, 40, 20, 55)  # (height, width); (left, top, right, bottom)


def curves_image(curves: dict) -> np.ndarray:
    """One panel per curve metric (x: fraction of pixels switched, y: mean probability of the
    class), ticks and labels on both axes, and a legend: HxWx3 uint8 BGR (OpenCV)."""
    present = [m for m in CURVE_METRICS if any(m in per for per in curves.values())]
    top_value = max(float(np.max(per[m])) for per in curves.values() for m in present if m in per)
    tick = 0.1 if top_value <= 0.8 else 0.2
    y_max = max(tick, float(np.ceil(top_value / tick - 1e-9) * tick))
    styles = {name: (PALETTE[i % len(PALETTE)], name in BASELINES) for i, name in enumerate(curves)}
    panels = [_panel(metric, curves, styles, y_max, tick) for metric in present]
    return np.vstack([np.hstack(panels), _legend(styles, sum(p.shape[1] for p in panels))])


def _panel(metric: str, curves: dict, styles: dict, y_max: float, tick: float) -> np.ndarray:
    height, width = PANEL
    left, top, right, bottom = MARGIN[0], MARGIN[1], width - MARGIN[2], height - MARGIN[3]
    panel = np.full((height, width, 3), 255, np.uint8)
    for i in range(6):
        x = int(left + i / 5 * (right - left))
        cv2.line(panel, (x, bottom), (x, bottom + 5), TEXT, 1)
        _text(panel, f"{i / 5:.1f}", (x, bottom + 20), centre=True)
    for i in range(int(round(y_max / tick)) + 1):
        y = int(bottom - i * tick / y_max * (bottom - top))
        cv2.line(panel, (left - 5, y), (left, y), TEXT, 1)
        cv2.line(panel, (left + 1, y), (right - 1, y), (225, 225, 225), 1)
        _text(panel, f"{i * tick:.1f}", (left - 35, y + 5))
    cv2.rectangle(panel, (left, top), (right, bottom), TEXT, 1)
    action = "removed" if metric.startswith("deletion") else "revealed"
    _text(panel, f"{metric} ({BETTER[metric]} area is better)", ((left + right) // 2, 25), centre=True)
    _text(panel, f"fraction of pixels {action}, most salient first", ((left + right) // 2, bottom + 42), centre=True)
    for name, per in curves.items():
        if metric in per:
            values = np.asarray(per[metric])
            xs = left + np.linspace(0, 1, len(values)) * (right - left)
            ys = bottom - np.clip(values / y_max, 0, 1) * (bottom - top)
            colour, dashed = styles[name]
            _polyline(panel, np.stack([xs, ys], 1), colour, dashed)
    return panel


def _legend(styles: dict, width: int) -> np.ndarray:
    """Rows of (line sample, name), as many per row as fit; y axis named first."""
    entries = [("y: mean probability of the explained class; solid: methods, dashed: baselines", None)]
    entries += [(name, style) for name, style in styles.items()]
    legend = np.full((30 + 24 * ((len(styles) + 3) // 4), width, 3), 255, np.uint8)
    _text(legend, entries[0][0], (MARGIN[0], 18))
    for i, (name, (colour, dashed)) in enumerate(entries[1:]):
        x, y = MARGIN[0] + (i % 4) * ((width - MARGIN[0]) // 4), 42 + 24 * (i // 4)
        _polyline(legend, np.array([[x, y - 5], [x + 40, y - 5]], float), colour, dashed)
        _text(legend, name, (x + 48, y))
    return legend


def _polyline(image: np.ndarray, points: np.ndarray, colour: tuple, dashed: bool) -> None:
    """A 2-pixel line through the points; dashed: 8 pixels on, 5 off along its length."""
    if not dashed:
        cv2.polylines(image, [np.rint(points).astype(np.int32)], False, colour, 2, cv2.LINE_AA)
        return
    lengths = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    along = np.arange(0, lengths[-1], 1.0)
    xs, ys = np.interp(along, lengths, points[:, 0]), np.interp(along, lengths, points[:, 1])
    on = (along % 13) < 8
    for start in np.flatnonzero(on & ~np.concatenate([[False], on[:-1]])):
        stop = start
        while stop + 1 < len(on) and on[stop + 1]:
            stop += 1
        segment = np.stack([xs[start:stop + 1], ys[start:stop + 1]], 1)
        cv2.polylines(image, [np.rint(segment).astype(np.int32)], False, colour, 2, cv2.LINE_AA)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], centre: bool = False) -> None:
    x, y = origin
    if centre:
        x -= cv2.getTextSize(text, FONT, FONT_SCALE, 1)[0][0] // 2
    cv2.putText(image, text, (int(x), int(y)), FONT, FONT_SCALE, TEXT, 1, cv2.LINE_AA)


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
    """report.md, metrics.json, curves.png and (with examples) examples.png in `out`: the set
    appears whole or not at all (runtime.writer)."""
    out.mkdir(parents=True, exist_ok=True)
    files = [(out / "metrics.json", json.dumps(data, indent=2).encode()), (out / "report.md", markdown(data).encode())]
    if data["curves"]:
        files.append((out / "curves.png", cv2.imencode(".png", curves_image(data["curves"]))[1].tobytes()))
    if examples:
        files.append((out / "examples.png", cv2.imencode(".png", examples_image(examples))[1].tobytes()))
    write_set((str(path), content) for path, content in files)

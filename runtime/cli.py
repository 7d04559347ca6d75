"""python -m runtime: image files and folders in; overlays, heatmaps and a report out."""

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence

from tqdm import tqdm

from .errors import ModelError, UsageError, one_line
from .explainer import Explainer
from .images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from .methods import DEFAULT_MAX_CHANNELS, METHODS
from .render import contact_sheet, save_npy, save_png
from .results import Explanation
from .session import DEVICES

EXIT_OK = 0
EXIT_IMAGE_FAILED = 1
EXIT_CANNOT_START = 2
EXIT_INTERRUPTED = 130
PROGRESS_MIN_IMAGES = 4

EPILOG = f"""\
outputs, per image and explained class:
  OUT/<image stem>_<which>_<label>[_<method>]_overlay.png   JET heatmap * 0.4 + image
  OUT/<image stem>_<which>_<label>[_<method>]_heatmap.npy   float32 [H, W], 0..1, original size
  OUT/<image stem>_grid.png                                 with --grid: per class, the image then each method
  <which> is top1, top2, ... for the top-k classes, c<N> for a class given with --class N;
  _<method> follows the label for any method but gradcam alone, so runs of different methods
  never overwrite each other; images of the same stem get -2, -3, ... after the stem
exit codes:
  {EXIT_OK}  every image succeeded
  {EXIT_IMAGE_FAILED}  at least one image failed (one line each on stderr); the others were written
  {EXIT_CANNOT_START}  the run could not start: bad arguments, missing or invalid model,
     CUDA unavailable, class index or top-k out of range
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)"""


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line, like every other error."""

    def error(self, message: str) -> None:
        self.exit(EXIT_CANNOT_START, f"onnxcam: arguments: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="onnxcam",
        description="Grad-CAM heatmaps and top-k predictions from an onnxcam .onnx model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="IMAGE", help="image files, or folders to search for them"
    )
    parser.add_argument("--model", required=True, help="the .onnx file written by python -m export.build")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--top-k", type=int, help="predictions to report and explain (default: 3)")
    parser.add_argument(
        "--class",
        dest="class_index",
        type=int,
        nargs="+",
        action="extend",
        metavar="N",
        help="explain these class indices instead of the top-k",
    )
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="auto = CUDA when available (default)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per model run (default: 8)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images (default: {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--method",
        type=method_list,
        default=["gradcam"],
        metavar="M[,M...]",
        help=f"CAM methods, comma-separated: {', '.join(METHODS)} (default: gradcam)",
    )
    parser.add_argument(
        "--aug-smooth", action="store_true", help="average over horizontal flips x intensity 0.9/1/1.1"
    )
    parser.add_argument(
        "--eigen-smooth",
        action="store_true",
        help="first principal component of the weighted activations instead of their sum",
    )
    parser.add_argument(
        "--max-channels",
        type=int,
        default=DEFAULT_MAX_CHANNELS,
        help=f"scorecam: model runs per image, for the most active channels (default: {DEFAULT_MAX_CHANNELS})",
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="also write OUT/<image>_grid.png: the image and each method's overlay",
    )
    return parser


def method_list(text: str) -> list[str]:
    """'gradcam,scorecam' -> ['gradcam', 'scorecam']; each a known method, none twice."""
    methods = [name.strip() for name in text.split(",")]
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {unknown[0]!r} (use {', '.join(METHODS)})")
    if len(set(methods)) != len(methods):
        raise argparse.ArgumentTypeError(f"a method given twice in {text!r}")
    return methods


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code. Never lets a traceback out."""
    warnings.showwarning = _warning_on_one_line
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_CANNOT_START
    try:
        return run(args)
    except KeyboardInterrupt:
        _report("interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:  # the last guard: one line, never a traceback
        _report(f"unexpected error: {type(error).__name__}: {one_line(error)}")
        return EXIT_CANNOT_START


def run(args: argparse.Namespace) -> int:
    sources, empty_folders = collect_images(args.inputs)
    try:
        explainer = Explainer(
            args.model,
            args.device,
            args.batch_size,
            args.max_pixels,
            args.method[0],
            args.aug_smooth,
            args.eigen_smooth,
            args.max_channels,
        )
        top_k = args.top_k if args.top_k is not None else min(3, explainer.card.num_classes)
        outcomes = explainer.explain_methods(sources, args.method, top_k, args.class_index)
        os.makedirs(args.out, exist_ok=True)
    except (ModelError, UsageError) as error:
        _report(str(error))
        return EXIT_CANNOT_START
    except OSError as error:
        _report(f"{args.out}: cannot create the output folder ({error.strerror or one_line(error)})")
        return EXIT_CANNOT_START
    card = explainer.card
    if card.random_weights:
        _report(f"warning: {args.model} was exported with random weights "
                f"({card.weights.get('source', 'none')}): its predictions and maps mean nothing")
    weights = {"source": card.weights.get("source"), "random": card.random_weights}
    layers = f"layer {card.layer}" if len(card.layers) == 1 else f"layers {', '.join(card.layers)}"
    _report(f"{args.model}: {card.model}, {layers}, {', '.join(args.method)} on {explainer.provider}")
    failures = len(empty_folders)
    for folder in empty_folders:
        _report(f"{folder}: no image files in this folder ({', '.join(IMAGE_SUFFIXES)})")
    stems = output_stems(sources)
    show_progress = len(sources) >= PROGRESS_MIN_IMAGES and sys.stderr.isatty()
    with tqdm(total=len(sources), unit="image", file=sys.stderr, disable=not show_progress) as progress:
        try:
            for per_method in outcomes:
                progress.update()
                source = per_method[0].source
                if per_method[0].error is not None:
                    _report(str(per_method[0].error))
                    failures += 1
                    continue
                explanations = [outcome.explanation for outcome in per_method]
                try:
                    files = [
                        write_outputs(explanation, args.out, stems[source], args.method != ["gradcam"],
                                      args.class_index is not None)
                        for explanation in explanations
                    ]
                    grid = write_grid(explanations, args.out, stems[source]) if args.grid else None
                except OSError as error:
                    _report(f"{source}: cannot write outputs ({one_line(error)})")
                    failures += 1
                    continue
                tqdm.write(format_result(explanations, files, grid, args.json, weights), file=sys.stdout)
        except Exception as error:  # e.g. onnxruntime failing part way: the run stops, one line
            _report(f"{args.model}: run failed ({type(error).__name__}: {one_line(error)})")
            return EXIT_IMAGE_FAILED
    return EXIT_IMAGE_FAILED if failures else EXIT_OK


def collect_images(arguments: Sequence[str]) -> tuple[list[str], list[str]]:
    """Files as given; folders walked (sorted, hidden entries skipped) for image suffixes.
    Returns the images and the folders that held none."""
    images, empty_folders = [], []
    for argument in arguments:
        if not os.path.isdir(argument):
            images.append(argument)
            continue
        found = []
        for folder, subfolders, files in os.walk(argument):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            found += [
                os.path.join(folder, name)
                for name in files
                if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)
            ]
        images += sorted(found)
        if not found:
            empty_folders.append(argument)
    return images, empty_folders


def output_stems(sources: Sequence[str]) -> dict[str, str]:
    """Each source's file stem; different files with the same stem get -2, -3, ... so that no
    output overwrites another."""
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for source in sources:
        if source in stems:
            continue
        base = os.path.splitext(os.path.basename(os.path.normpath(source)))[0] or "image"
        stem, count = base, 1
        while stem in taken:
            count += 1
            stem = f"{base}-{count}"
        stems[source] = stem
        taken.add(stem)
    return stems


def safe_label(label: str, class_index: int) -> str:
    """A label usable in a file name: letters, digits, '.', '-', '_' only."""
    return re.sub(r"[^\w.-]+", "_", label, flags=re.ASCII).strip("._")[:64] or f"class{class_index}"


def write_outputs(
    explanation: Explanation, out: str, stem: str, name_method: bool = False, given_classes: bool = False
) -> list[tuple[str, str]]:
    """Write each map's overlay PNG and heatmap .npy, named by rank (top1, top2, ...) or, for
    given_classes, by class index (c281), with the method in the name if name_method; returns
    their (overlay, heatmap) paths."""
    files = []
    method = f"_{explanation.method}" if name_method else ""
    for class_map, overlay in zip(explanation.maps, explanation.overlays, strict=True):
        which = f"c{class_map.class_index}" if given_classes else f"top{class_map.rank}"
        label = safe_label(class_map.label, class_map.class_index)
        prefix = os.path.join(out, f"{stem}_{which}_{label}{method}")
        overlay_path, heatmap_path = f"{prefix}_overlay.png", f"{prefix}_heatmap.npy"
        save_png(overlay_path, overlay)
        save_npy(heatmap_path, class_map.heatmap)
        files.append((overlay_path, heatmap_path))
    return files


def write_grid(explanations: Sequence[Explanation], out: str, stem: str) -> str:
    """Write OUT/<stem>_grid.png: one row per explained class, the image (captioned with the
    class) then each method's overlay (captioned with the method); returns its path."""
    image = explanations[0].image
    rows = [
        [(class_map.label, image)]
        + [(explanation.method, explanation.overlays[k]) for explanation in explanations]
        for k, class_map in enumerate(explanations[0].maps)
    ]
    path = os.path.join(out, f"{stem}_grid.png")
    save_png(path, contact_sheet(rows))
    return path


def format_result(
    explanations: Sequence[Explanation],
    files: Sequence[list[tuple[str, str]]],
    grid: str | None,
    as_json: bool,
    weights: dict | None = None,
) -> str:
    """One JSON line, or a short table, for one image explained by one or more methods; the JSON
    says where the model's weights came from (`weights`: source, random)."""
    first = explanations[0]
    maps = [
        (explanation.method, class_map, overlay, heatmap)
        for explanation, method_files in zip(explanations, files, strict=True)
        for class_map, (overlay, heatmap) in zip(explanation.maps, method_files, strict=True)
    ]
    if as_json:
        report = {
            "image": first.source,
            "predictions": [
                {"index": p.index, "label": p.label, "probability": p.probability} for p in first.predictions
            ],
            "maps": [
                {
                    "method": method,
                    "class_index": m.class_index,
                    "label": m.label,
                    "overlay": overlay,
                    "heatmap": heatmap,
                    "peak": list(m.peak),
                }
                for method, m, overlay, heatmap in maps
            ],
        }
        report["weights"] = weights or {}
        return json.dumps(report | ({"grid": grid} if grid else {}))
    width = max(len(p.label) for p in first.predictions + first.maps)
    lines = [first.source]
    lines += [f"  {p.index:>6}  {p.label:<{width}}  {p.probability:7.2%}" for p in first.predictions]
    tagged = len(explanations) > 1
    for method, m, overlay, _ in maps:
        tag = f" {method}" if tagged else ""
        lines.append(f"  map #{m.rank} {m.label:<{width}}{tag}  peak (x={m.peak[0]}, y={m.peak[1]})  {overlay}")
    lines += [f"  grid {grid}"] if grid else []
    return "\n".join(lines)


def _report(message: str) -> None:
    tqdm.write(f"onnxcam: {message}", file=sys.stderr)


def _warning_on_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    _report(f"warning: {one_line(message)}")

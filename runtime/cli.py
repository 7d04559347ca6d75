"""python -m runtime: image files and folders in; overlays, heatmaps and a report out."""

import argparse
import collections
import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import commandline
from .commandline import (
    EXIT_CANNOT_START,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PIPE_CLOSED,
    EXIT_TERMINATED,
    OneLineParser,
    method_list,  # noqa: F401 (runtime.batch imports it from here until it adopts runtime.commandline)
    shown,
    write_line,
)
from .errors import ModelError, UsageError, one_line
from .images import IMAGE_SUFFIXES
from .render import contact_sheet, encoded_image, npy_parts
from .render import overlay as render_overlay
from .model_card import ModelCard
from .results import ClassMap, Explanation, Outcome, record
from .writer import DEFAULT_NAME_MAX, LONGEST_SUFFIX, Buffer, name_max, probe_folder, shortened, write_set

PROG = "onnxcam"
PROGRESS_MIN_IMAGES = 4
WRITER_THREADS = 2  # encode and write while the model runs the next batch

EPILOG = f"""\
outputs, per image and explained class (each image's files appear all together or not at all):
  OUT/<image stem>_<which>_<label>[_<method>]_overlay.png   JET heatmap * 0.4 + image (--overlay-format)
  OUT/<image stem>_<which>_<label>[_<method>]_heatmap.npy   float32, 0..1: [H, W] at the original size
      with --heatmaps full (default: the map each overlay shows, exactly); [h, w] at the target
      layer's resolution with --heatmaps low (a few KB, upsample it yourself); none: not written
  OUT/<image stem>_grid.png                                 with --grid: per class, the image then each method
  <which> is top1 (top2, ... with --explain-top), c<N> for a class given with --class N;
  _<method> follows the label for any method but gradcam alone, so runs of different methods
  never overwrite each other; images of the same stem get -2, -3, ... after the stem; stems too
  long for the file system are shortened
durability:
  files are written under temporary names (.onnxcam-*.tmp) and renamed into place, so a reader
  never sees a partial file; an image whose files cannot all be written (disk full) leaves none.
  Files are not fsynced: a power cut can lose the outputs of the last few seconds (the system's
  write-back delay), never corrupt older ones; run `sync` afterwards if they must survive one
exit codes:
  {EXIT_OK}  every image succeeded
  {EXIT_FAILED}  at least one image failed (one line each on stderr); the others were written
  {EXIT_CANNOT_START}  the run could not start: bad arguments, missing or invalid model, --out not
     writable, CUDA unavailable, class index or top-k out of range
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
  {EXIT_PIPE_CLOSED}  stdout was closed by its reader (e.g. | head): the run stopped quietly
  {EXIT_TERMINATED}  terminated (SIGTERM); images being written were finished, nothing half-written"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Grad-CAM heatmaps and top-k predictions from an onnxcam .onnx model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="IMAGE", help="image files, or folders to search for them"
    )
    commandline.add_model(parser)
    commandline.add_out(parser, default="out")
    commandline.add_targets(parser)
    commandline.add_session(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    commandline.add_method_options(parser)
    parser.add_argument(
        "--overlay-format",
        choices=("png", "jpg", "webp"),
        default="png",
        help="overlay file format (default: png)",
    )
    parser.add_argument(
        "--heatmaps",
        choices=("full", "low", "none"),
        default="full",
        help="heatmap .npy files: at the image's size, at the layer's, or none (default: full)",
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="also write OUT/<image>_grid.png: the image and each method's overlay",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code. Never lets a traceback out."""
    return commandline.run_main(PROG, build_parser(), run, argv)


def run(args: argparse.Namespace) -> int:
    sources, empty_folders = collect_images(args.inputs)
    try:
        created = probe_folder(args.out)
    except OSError as error:
        _report(f"{args.out}: cannot write to the output folder ({error.strerror or one_line(error)}); "
                "choose another --out")
        return EXIT_CANNOT_START
    try:
        explainer = commandline.explainer_from_args(args)
        targets = commandline.targets_from_args(args, explainer.card)
        outcomes = explainer.explain_targets(sources, targets)
    except (ModelError, UsageError) as error:
        _report(str(error))
        if created:
            os.rmdir(args.out)
        return EXIT_CANNOT_START
    card = explainer.card
    if card.random_weights:
        _report(f"warning: {args.model} was exported with random weights "
                f"({card.weights.get('source', 'none')}): its predictions and maps mean nothing")
    layers = f"layer {card.layer}" if len(card.layers) == 1 else f"layers {', '.join(card.layers)}"
    _report(f"{args.model}: {card.model}, {layers}, {', '.join(args.method)} on {explainer.provider}")
    for folder in empty_folders:
        _report(f"{folder}: no image files in this folder ({', '.join(IMAGE_SUFFIXES)})")
    options = OutputOptions(
        args.out, targets.methods != ("gradcam",), targets.classes is not None,
        args.overlay_format, args.heatmaps, args.grid,
    )
    stems = output_stems(sources, name_max(args.out) - LONGEST_SUFFIX)
    show_progress = len(sources) >= PROGRESS_MIN_IMAGES and sys.stderr.isatty()
    failures = len(empty_folders)
    pending: collections.deque[tuple[str, list[Explanation], Future]] = collections.deque()
    pool = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="onnxcam-writer")

    def report_written(source: str, explanations: list[Explanation], written: Future) -> int:
        """Print one image's result once its files are on disk; returns 1 if it failed."""
        try:
            files, grid = written.result()
        except Exception as error:  # disk full, an unwritable name, memory for a huge grid, ...
            _report(f"{source}: cannot write outputs ({type(error).__name__}: {one_line(error)})")
            return 1
        try:
            write_line(format_result(explanations, files, grid, args.json, card), sys.stdout)
        except BrokenPipeError:
            raise
        except Exception as error:  # its files are written; only the report failed
            _report(f"{source}: cannot print the result ({type(error).__name__}: {one_line(error)})")
            return 1
        return 0

    try:
        with _progress_bar(len(sources)) if show_progress else contextlib.nullcontext() as progress:
            for per_method in _model_runs(outcomes, args.model):
                if progress is not None:
                    progress.update()
                if per_method is None:  # the model failed: the images left were not explained
                    failures += 1
                    break
                source = per_method[0].source
                if per_method[0].error is not None:
                    _report(str(per_method[0].error))
                    failures += 1
                    continue
                explanations = [outcome.explanation for outcome in per_method]
                pending.append((source, explanations, pool.submit(write_image, explanations, stems[source], options)))
                while len(pending) > max(args.batch_size, WRITER_THREADS):
                    failures += report_written(*pending.popleft())
            while pending:
                failures += report_written(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a set being written is finished whole
    return EXIT_FAILED if failures else EXIT_OK


def _model_runs(outcomes: Iterator[tuple[Outcome, ...]], model: str) -> Iterator[tuple[Outcome, ...] | None]:
    """The outcomes; None, once, after a failure of the model run itself (one line naming the model)."""
    while True:
        try:
            yield next(outcomes)
        except StopIteration:
            return
        except Exception as error:  # onnxruntime failing part way
            _report(f"{model}: run failed ({type(error).__name__}: {one_line(error)}); "
                    "the images after the last one reported were not explained")
            yield None
            return


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
    return re.sub(r"[^\w.-]+", "_", label, flags=re.ASCII).strip("._")[:64] or f"class{class_index}"


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
) -> tuple[list[list[tuple[str, str | None]]], str | None]:
    """Write one image's overlays, heatmaps and grid as one set (all or none), each rendered
    and encoded as it is written; returns per method the (overlay, heatmap or None) paths, and
    the grid's."""
    files = [[map_paths(explanation, class_map, stem, options) for class_map in explanation.maps]
             for explanation in explanations]
    grid = os.path.join(options.folder, f"{stem}_grid.png") if options.grid else None
    write_set(encoded_files(explanations, files, grid, options))
    return files, grid


def map_paths(
    explanation: Explanation, class_map: ClassMap, stem: str, options: OutputOptions
) -> tuple[str, str | None]:
    """The (overlay, heatmap or None) paths of one map."""
    method = f"_{explanation.method}" if options.name_method else ""
    which = f"c{class_map.class_index}" if options.given_classes else f"top{class_map.rank}"
    label = safe_label(class_map.label, class_map.class_index)
    prefix = os.path.join(options.folder, f"{stem}_{which}_{label}{method}")
    heatmap_path = f"{prefix}_heatmap.npy" if options.heatmaps != "none" else None
    return f"{prefix}_overlay.{options.overlay_format}", heatmap_path


def encoded_files(
    explanations: Sequence[Explanation],
    files: Sequence[list[tuple[str, str | None]]],
    grid: str | None,
    options: OutputOptions,
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


def format_result(
    explanations: Sequence[Explanation],
    files: Sequence[list[tuple[str, str | None]]],
    grid: str | None,
    as_json: bool,
    card: ModelCard | None = None,
) -> str:
    """One JSON line (results.record, plus each map's overlay and heatmap files and the grid),
    or a short table, for one image explained by one or more methods."""
    paths = [paths for method_files in files for paths in method_files]
    if as_json:
        document = record(explanations, card)
        for entry, (overlay, heatmap) in zip(document["maps"], paths, strict=True):
            entry.update(overlay=overlay, heatmap=heatmap)
        return json.dumps(document | ({"grid": grid} if grid else {}))
    first = explanations[0]
    maps = [(explanation.method, class_map) for explanation in explanations for class_map in explanation.maps]
    width = max(len(p.label) for p in first.predictions + first.maps)
    lines = [shown(first.source)]
    lines += [f"  {p.index:>6}  {p.label:<{width}}  {p.probability:7.2%}" for p in first.predictions]
    tagged = len(explanations) > 1
    for (method, m), (overlay, _) in zip(maps, paths, strict=True):
        tag = f" {method}" if tagged else ""
        lines.append(f"  map #{m.rank} {m.label:<{width}}{tag}  peak (x={m.peak[0]}, y={m.peak[1]})  {shown(overlay)}")
    lines += [f"  grid {shown(grid)}"] if grid else []
    return "\n".join(lines)


def _progress_bar(total: int):
    """A tqdm bar on stderr. tqdm is imported only here, when a bar shows: it takes 35 ms to
    import, 1.5% of a 32-photo run."""
    from tqdm import tqdm

    return tqdm(total=total, unit="image", file=sys.stderr)


def _report(message: str) -> None:
    commandline.report(PROG, message)

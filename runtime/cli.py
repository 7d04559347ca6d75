"""python -m runtime: image files and folders in; overlays, heatmaps and a report out."""

import argparse
import collections
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from . import commandline
from .commandline import (
    EXIT_CANNOT_START,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    OneLineParser,
    method_list,  # noqa: F401 (runtime.batch imports it from here until it adopts runtime.commandline)
    write_line,
)
from .errors import ModelError, UsageError, one_line
from .images import IMAGE_SUFFIXES
from .model_card import ModelCard
from .naming import LONGEST_SUFFIX, name_max, output_stems
from .outputs import OutputOptions, write_image
from .reporting import format_result, progress_bar
from .results import Explanation, Outcome
from .targets import DEFAULT_METHOD, Targets
from .writer import probe_folder

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
  write-back delay), never corrupt older ones; run `sync` afterwards if they must survive one.
  On Ctrl-C or SIGTERM the images being written are finished: nothing is left half-written
{EXIT_CODES_HELP}"""


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
    """The command, once its arguments are parsed: explain each image, write its files, print it."""
    sources, empty_folders = collect_images(args.inputs)
    started = start(args, sources)
    if started is None:
        return EXIT_CANNOT_START
    card, targets, outcomes = started
    for folder in empty_folders:
        _report(f"{folder}: no image files in this folder ({', '.join(IMAGE_SUFFIXES)})")
    options = OutputOptions(
        args.out, targets.methods != (DEFAULT_METHOD,), targets.classes is not None,
        args.overlay_format, args.heatmaps, args.grid,
    )
    failures = len(empty_folders) + write_and_report(args, sources, outcomes, options, card)
    return EXIT_FAILED if failures else EXIT_OK


def start(args: argparse.Namespace, sources: list[str]) -> tuple[ModelCard, Targets, Iterator] | None:
    """Check --out, load the model, check the targets and say what runs; None (after one line)
    if the run cannot start. The output folder is checked before the model loads, and removed
    again if this created it and the run cannot start."""
    try:
        created = probe_folder(args.out)
    except OSError as error:
        _report(f"{args.out}: cannot write to the output folder ({error.strerror or one_line(error)}); "
                "choose another --out")
        return None
    try:
        explainer = commandline.explainer_from_args(args)
        targets = commandline.targets_from_args(args, explainer.card)
        outcomes = explainer.explain_targets(sources, targets)
    except (ModelError, UsageError) as error:
        _report(str(error))
        if created:
            os.rmdir(args.out)
        return None
    card = explainer.card
    if card.random_weights:
        _report(f"warning: {args.model} was exported with random weights "
                f"({card.weights.get('source', 'none')}): its predictions and maps mean nothing")
    layers = f"layer {card.layer}" if len(card.layers) == 1 else f"layers {', '.join(card.layers)}"
    _report(f"{args.model}: {card.model}, {layers}, {', '.join(targets.methods)} on {explainer.provider}")
    return card, targets, outcomes


def write_and_report(
    args: argparse.Namespace,
    sources: list[str],
    outcomes: Iterator[tuple[Outcome, ...]],
    options: OutputOptions,
    card: ModelCard,
) -> int:
    """Write each explained image's files on WRITER_THREADS threads while the model runs on, and
    print each image's result, in order, once its files are on disk; returns how many failed."""
    stems = output_stems(sources, name_max(args.out) - LONGEST_SUFFIX)
    show_progress = len(sources) >= PROGRESS_MIN_IMAGES and sys.stderr.isatty()
    failures = 0
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
        with progress_bar(len(sources)) if show_progress else contextlib.nullcontext() as progress:
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
    return failures


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


def _report(message: str) -> None:
    commandline.report(PROG, message)

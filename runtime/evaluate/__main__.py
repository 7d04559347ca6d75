"""python -m runtime.evaluate IMAGES... --model M.onnx --out DIR: how faithful is each map?"""

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import OnnxcamError, one_line
from ..explainer import Explainer
from ..methods import METHODS
from . import boxes as box_file
from .baselines import BASELINES
from . import report, road
from .run import DEFAULT_METRICS, METRICS, Counted, ModelRuns, evaluate, normalisation_of, passes_per_map

EXIT_OK, EXIT_IMAGE_FAILED, EXIT_CANNOT_START = 0, 1, 2
PROG = "onnxcam-evaluate"


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(EXIT_CANNOT_START, f"{PROG}: arguments: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Deletion / insertion AUC, average drop, increase in confidence, pointing game "
        "and a model-randomisation sanity check for each CAM method, on onnxruntime alone.",
        epilog=f"exit codes: {EXIT_OK} all images used; {EXIT_IMAGE_FAILED} some images skipped (one line "
        f"each), the report written from the others; {EXIT_CANNOT_START} the run could not start",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--model", required=True, help="the onnxcam .onnx file")
    parser.add_argument("--methods", default="gradcam", help=f"comma-separated, or all ({', '.join(METHODS)})")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--class", dest="classes", type=int, nargs="+", metavar="N", help="explain these classes")
    which.add_argument("--top-k", type=int, default=1, help="explain the k most probable classes (default 1)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated, or all (default {','.join(DEFAULT_METRICS)}; also "
                        f"{', '.join(m for m in METRICS if m not in DEFAULT_METRICS)})")
    parser.add_argument("--boxes", help=f"JSON {box_file.FORMAT}, inclusive pixels of the original image; "
                        "an image is matched by its path, then by its file name when unique")
    parser.add_argument("--steps", type=int, default=50,
                        help="deletion / insertion steps, at most the model input's pixels (default 50)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model run (default 32)")
    parser.add_argument("--random-model", help="the same architecture exported with --weights none")
    parser.add_argument("--seed", type=int, default=0, help="random baseline and bootstrap seed")
    parser.add_argument("--out", required=True, help="folder for report.md, metrics.json, curves.png")
    return parser


def _split(text: str, known: Sequence[str], what: str) -> list[str]:
    chosen = list(known) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    for name in chosen:
        if name not in known:
            raise OnnxcamError(f"{what} {name!r}: unknown (use {', '.join(known)} or all)")
    if not chosen:
        raise OnnxcamError(f"{what}: none given")
    return chosen


def _check_steps(steps: int, input_size: tuple[int, int]) -> None:
    height, width = input_size
    if not 1 <= steps <= height * width:
        raise OnnxcamError(f"steps {steps}: must be between 1 and the model input's {height}x{width} = "
                           f"{height * width} pixels (one pixel per step at most)")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _estimate(explainer: Explainer, methods: list[str], chosen: list[str], steps: int, images: int,
              classes: int) -> str:
    """About how long the run takes: one timed batch of forward passes times the passes needed."""
    height, width = explainer.card.input_size
    maps = (len(methods) + len(BASELINES)) * classes
    passes = images * (maps * passes_per_map(chosen, height * width, steps) + 2)
    batch = min(explainer.batch_size, 8)
    score = Counted(ModelRuns(explainer.model_path, 0).score)
    blank = np.zeros((batch, height, width, 3), np.float32)
    score(blank, np.zeros(batch, np.int64))  # warm-up
    started = time.perf_counter()
    score(blank, np.zeros(batch, np.int64))
    seconds = (time.perf_counter() - started) / batch * passes
    if "road" in chosen:  # plus the sparse solves of its imputations: 2 per percentile and map
        started = time.perf_counter()
        road.impute(blank[0], np.broadcast_to(np.arange(height)[:, None] < height // 2, (height, width)))
        seconds += (time.perf_counter() - started) * images * maps * 2 * len(road.PERCENTILES)
    return f"{images} images x {maps} maps: about {passes} forward passes, {_duration(seconds)} of model time"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; returns the exit code. Never lets a traceback out."""
    args = build_parser().parse_args(argv)
    try:
        methods = _split(args.methods, list(METHODS), "method")
        chosen = _split(args.metrics, METRICS, "metric")
        boxes = box_file.read(args.boxes) if args.boxes is not None else None
        if boxes is None:
            chosen = [name for name in chosen if name != "pointing-game"]  # nothing to point at
        if args.steps < 1:
            raise OnnxcamError(f"steps {args.steps}: must be at least 1")
        explainer = Explainer(args.model, batch_size=args.batch_size)
        _check_steps(args.steps, explainer.card.input_size)
        random_explainer = Explainer(args.random_model, batch_size=args.batch_size) if args.random_model else None
        if random_explainer and random_explainer.card.input_size != explainer.card.input_size:
            raise OnnxcamError(f"{args.random_model}: input size differs from {args.model}'s")
        normalisation = normalisation_of(explainer.card.preprocessing)
        if normalisation is None:
            print(f"{PROG}: warning: preprocessing {explainer.card.preprocessing!r} unknown: the model input's "
                  "zero taken as black", file=sys.stderr)
        if explainer.card.random_weights:
            print(f"{PROG}: warning: {args.model} has random weights (exported with --weights none): "
                  "its maps explain nothing", file=sys.stderr)
        classes = len(args.classes) if args.classes else args.top_k
        print(f"{PROG}: {_estimate(explainer, methods, chosen, args.steps, len(args.images), classes)}",
              file=sys.stderr)
        with tqdm(total=len(args.images), unit="image", file=sys.stderr, disable=len(args.images) < 4) as bar:

            def skipped(error: OnnxcamError) -> None:
                tqdm.write(f"{PROG}: skipped {error}", file=sys.stderr)
                bar.total -= 1  # the bar counts the images evaluated, out of the usable ones
                bar.refresh()

            results = evaluate(
                explainer, args.images, methods, chosen, args.top_k, args.classes, args.steps, args.seed,
                boxes, random_explainer, on_error=skipped, on_image=bar.update, normalisation=normalisation,
            )
        if not results.images:
            raise OnnxcamError("no usable image: nothing to evaluate")
        if results.unboxed:
            print(f"{PROG}: no box for {len(results.unboxed)} of {results.images} images (matched by path, then by "
                  f"unique file name): {', '.join(results.unboxed)}", file=sys.stderr)
        model = report.ModelInfo(args.model, _sha256(args.model), explainer.card.layers, explainer.card.random_weights,
                                 explainer.card.preprocessing)
        run = report.RunInfo(model, results.names, methods, chosen, args.steps, args.seed, args.top_k, args.classes,
                             args.random_model)
        report.write(Path(args.out), report.summary(results, args.seed, run=run), results.examples)
    except (OnnxcamError, OSError) as error:
        print(f"{PROG}: {one_line(error)}", file=sys.stderr)
        return EXIT_CANNOT_START
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_CANNOT_START
    print(f"{PROG}: {results.images} images, {len(results.skipped)} skipped -> {args.out}/report.md")
    return EXIT_IMAGE_FAILED if results.skipped else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

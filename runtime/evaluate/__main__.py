"""python -m runtime.evaluate IMAGES... --model M.onnx --out DIR: how faithful is each map?"""

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import commandline as cl
from ..errors import OnnxcamError
from ..explainer import Explainer
from ..model_card import file_sha256
from ..targets import Targets
from . import boxes as box_file
from . import report, road
from .baselines import BASELINES
from .run import DEFAULT_METRICS, METRICS, ModelRuns, device_of, evaluate, normalisation_of, passes_per_map

PROG = "onnxcam-evaluate"
BATCH_SIZE = 32


def build_parser() -> argparse.ArgumentParser:
    parser = cl.OneLineParser(
        prog=PROG,
        description="RISE deletion / insertion, ROAD, average drop and the other confidence metrics, "
        "pointing game and a model-randomisation sanity check for each CAM method and five baselines, "
        "on onnxruntime alone.",
        epilog=cl.EXIT_CODES_HELP.replace("every input succeeded", "every image evaluated").replace(
            "the others were done", "the report was written from the others"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    cl.add_model(parser)
    cl.add_out(parser, help="folder for report.md, metrics.json, curves.png, examples.png")
    cl.add_targets(parser)  # maps of --explain-top N classes (or --top-k N, its old spelling here) or --class
    cl.add_session(parser, batch_size=BATCH_SIZE)
    cl.add_method_options(parser)
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated, or all (default {','.join(DEFAULT_METRICS)}; also "
                        f"{', '.join(m for m in METRICS if m not in DEFAULT_METRICS)})")
    parser.add_argument("--boxes", help=f"JSON {box_file.FORMAT}, inclusive pixels of the original image; "
                        "an image is matched by its path, then by its file name when unique")
    parser.add_argument("--steps", type=int, default=50,
                        help="deletion / insertion steps, at most the model input's pixels (default 50)")
    parser.add_argument("--random-model", help="the same architecture exported with --weights none")
    parser.add_argument("--seed", type=int, default=0, help="random baseline and bootstrap seed")
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


def _estimate(explainer: Explainer, methods: list[str], chosen: list[str], steps: int, images: int,
              classes: int, max_channels: int) -> str:
    """About how long the run takes: one timed batch of forward passes times the passes needed
    (the metrics', the explaining run, the random CAM's feature maps, Score-CAM's masked runs),
    plus ROAD's solves."""
    height, width = explainer.card.input_size
    maps = (len(methods) + len(BASELINES)) * classes
    explaining = 2 + (max_channels * classes if "scorecam" in methods else 0)
    passes = images * (maps * passes_per_map(chosen, height * width, steps) + explaining)
    batch = min(explainer.batch_size, 32)
    score = ModelRuns(explainer.model_path, 0, device_of(explainer)).score
    blank = np.zeros((batch, height, width, 3), np.float32)
    seconds = _fastest(lambda: score(blank, np.zeros(batch, np.int64))) / batch * passes
    if "road" in chosen:  # plus the sparse solves of its imputations: 2 per percentile and map
        half = np.broadcast_to(np.arange(height)[:, None] < height // 2, (height, width))
        seconds += _fastest(lambda: road.impute(blank[0], half)) * images * maps * 2 * len(road.PERCENTILES)
    return (f"{_count(images, 'image')} x {_count(maps, 'map')}: about {passes} forward passes, "
            f"{_duration(seconds)} of model time")


def _fastest(run: Callable[[], object]) -> float:
    """Seconds of the faster of two calls after a first one (imports, warm-up): less noise."""
    run()
    times = []
    for _ in range(2):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def targets_of(args: argparse.Namespace, explainer: Explainer) -> Targets:
    """The classes whose maps are measured: --class, or the --explain-top most probable (evaluate
    has no predictions to list, so --top-k N, its spelling before the shared flags, means the same)."""
    explain_top = None if args.class_index else (args.explain_top or args.top_k or 1)
    return Targets(1, explain_top, args.class_index, tuple(args.method)).check(explainer.card)


def body(args: argparse.Namespace) -> int:
    """Run the evaluation; returns the exit code (OnnxcamError: one line, exit 2)."""
    chosen = _split(args.metrics, METRICS, "metric")
    boxes = box_file.read(args.boxes) if args.boxes is not None else None
    if boxes is None:
        chosen = [name for name in chosen if name != "pointing-game"]  # nothing to point at
    if args.steps < 1:
        raise OnnxcamError(f"steps {args.steps}: must be at least 1")
    explainer = cl.explainer_from_args(args)
    _check_steps(args.steps, explainer.card.input_size)
    targets = targets_of(args, explainer)
    methods, classes = list(targets.methods), list(targets.classes) if targets.classes else None
    random_explainer = Explainer(args.random_model, batch_size=args.batch_size) if args.random_model else None
    if random_explainer and random_explainer.card.input_size != explainer.card.input_size:
        raise OnnxcamError(f"{args.random_model}: input size differs from {args.model}'s")
    normalisation = normalisation_of(explainer.card.preprocessing)
    if normalisation is None:
        cl.report(PROG, f"warning: preprocessing {explainer.card.preprocessing!r} unknown: the model input's "
                  "zero taken as black")
    if explainer.card.random_weights:
        cl.report(PROG, f"warning: {args.model} has random weights (exported with --weights none): "
                  "its maps explain nothing")
    cl.report(PROG, _estimate(explainer, methods, chosen, args.steps, len(args.images), targets.maps_per_method,
                                 args.max_channels))
    with tqdm(total=len(args.images), unit="image", file=sys.stderr, disable=len(args.images) < 4) as bar:

        def skipped(error: OnnxcamError) -> None:
            cl.report(PROG, f"skipped {error}")
            bar.total -= 1  # the bar counts the images evaluated, out of the usable ones
            bar.refresh()

        results = evaluate(
            explainer, args.images, methods, chosen, targets.maps_per_method, classes, args.steps, args.seed,
            boxes, random_explainer, on_error=skipped, on_image=bar.update, normalisation=normalisation,
        )
    if not results.images:
        raise OnnxcamError("no usable image: nothing to evaluate")
    if results.unboxed:
        cl.report(PROG, f"no box for {len(results.unboxed)} of {results.images} images (matched by path, then by "
                  f"unique file name): {', '.join(results.unboxed)}")
    model = report.ModelInfo(args.model, file_sha256(args.model), explainer.card.layers, explainer.card.random_weights,
                             explainer.card.preprocessing)
    run = report.RunInfo(model, results.names, methods, chosen, args.steps, args.seed, targets.maps_per_method,
                         classes, args.random_model)
    try:
        report.write(Path(args.out), report.summary(results, args.seed, run=run), results.examples)
    except OSError as error:
        raise OnnxcamError(f"{args.out}: cannot write the report ({error.strerror or error})") from None
    print(f"{PROG}: {_count(results.images, 'image')}, {len(results.skipped)} skipped -> {args.out}/report.md")
    return cl.EXIT_FAILED if results.skipped else cl.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """python -m runtime.evaluate; returns the exit code, never a traceback."""
    return cl.run_main(PROG, build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())

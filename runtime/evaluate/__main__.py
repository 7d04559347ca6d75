"""python -m runtime.evaluate IMAGES... --model M.onnx --out DIR: how faithful is each map?"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ..errors import OnnxcamError, one_line
from ..explainer import Explainer
from ..methods import METHODS
from . import report
from .run import METRICS, evaluate

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
    parser.add_argument("--metrics", default=",".join(METRICS), help="comma-separated subset of the default")
    parser.add_argument("--boxes", help='JSON {"IMAGE": {"CLASS": [[x0, y0, x1, y1], ...]}}, inclusive pixels')
    parser.add_argument("--steps", type=int, default=50, help="deletion / insertion steps (default 50)")
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


def _read_boxes(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        boxes = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise OnnxcamError(f"{path}: cannot read boxes: {one_line(error)}") from None
    if not isinstance(boxes, dict) or not all(isinstance(v, dict) for v in boxes.values()):
        raise OnnxcamError(f'{path}: boxes must be {{"IMAGE": {{"CLASS": [[x0, y0, x1, y1], ...]}}}}')
    return boxes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; returns the exit code. Never lets a traceback out."""
    args = build_parser().parse_args(argv)
    try:
        if args.steps < 1:
            raise OnnxcamError(f"steps {args.steps}: must be at least 1")
        methods = _split(args.methods, list(METHODS), "method")
        chosen = _split(args.metrics, METRICS, "metric")
        boxes = _read_boxes(args.boxes)
        explainer = Explainer(args.model, batch_size=args.batch_size)
        random_explainer = Explainer(args.random_model, batch_size=args.batch_size) if args.random_model else None
        if random_explainer and random_explainer.card.input_size != explainer.card.input_size:
            raise OnnxcamError(f"{args.random_model}: input size differs from {args.model}'s")
        with tqdm(total=len(args.images), unit="image", file=sys.stderr, disable=len(args.images) < 4) as bar:
            results = evaluate(
                explainer, args.images, methods, chosen, args.top_k, args.classes, args.steps, args.seed,
                boxes, random_explainer,
                on_error=lambda error: (tqdm.write(f"{PROG}: skipped {error}", file=sys.stderr), bar.update()),
                on_image=bar.update,
            )
        if not results.images:
            raise OnnxcamError("no usable image: nothing to evaluate")
        report.write(Path(args.out), report.summary(results, args.seed), results.examples)
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

"""`python -m export.build --model classifier.onnx ...`: the import's own command line."""

from __future__ import annotations

import argparse
import os

from export.onnx_import.wrap import PREPROCESSING


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line, like every other error."""

    def error(self, message: str) -> None:
        self.exit(2, f"export failed: arguments: {message} (see --help)\n")


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three numbers R,G,B") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three numbers R,G,B")
    return values


def _size(text: str) -> tuple[int, int]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected H,W") from None
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two positive integers H,W")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m export.build --model classifier.onnx",
        description="Import an ONNX image classifier (torch.onnx.export, timm, tf2onnx...) as an onnxcam "
        "Grad-CAM model, with onnx, onnxruntime and numpy only.",
        epilog="exit codes: 0 written, 1 export failed (nothing written), 2 bad arguments",
    )
    parser.add_argument("--model", required=True, help="PATH.onnx: the classifier (one image input, one output)")
    parser.add_argument("--layer", default="auto", help="auto (default: the tensor feeding the global pooling)")
    parser.add_argument("--preprocessing", choices=sorted(PREPROCESSING),
                        help="what the model expects of raw 0..255 RGB: torch (ImageNet mean/std), caffe, tf, none")
    parser.add_argument("--mean", type=_triple, help="R,G,B mean in 0..255 units (with --std, instead of --preprocessing)")
    parser.add_argument("--std", type=_triple, help="R,G,B standard deviation in 0..255 units")
    parser.add_argument("--layout", choices=["auto", "nchw", "nhwc"], default="auto", help="the model's input layout")
    parser.add_argument("--input-size", type=_size, help="H,W: needed when the model's input size is dynamic")
    parser.add_argument("--labels", help="JSON list of class names (default: ImageNet names for 1000 classes, else 'class N')")
    parser.add_argument("--score", choices=["logit"], default="logit", help="the differentiated score (logit)")
    parser.add_argument("--output", help="where to write the .onnx (default models/<model>_gradcam.onnx)")
    args = parser.parse_args(argv)
    if (args.mean is None) != (args.std is None):
        parser.error("--mean and --std go together")
    if args.mean is not None and args.preprocessing is not None:
        parser.error("give --preprocessing or --mean/--std, not both")
    if args.mean is None and args.preprocessing is None:
        parser.error("say what the model expects of raw 0..255 RGB: --preprocessing torch|caffe|tf|none "
                     "or --mean R,G,B --std R,G,B")
    if args.std is not None and min(args.std) <= 0:
        parser.error("--std: every value must be positive")
    if args.output is not None and not args.output.strip():
        parser.error("--output: an empty path; give a file name")
    if args.output is None:
        args.output = os.path.join("models", f"{os.path.splitext(os.path.basename(args.model))[0]}_gradcam.onnx")
    return args


def main(argv: list[str] | None = None) -> int:
    from export.onnx_import.build import run

    return run(parse_args(argv))

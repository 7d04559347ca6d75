"""The command line of `python -m export.build`, for both paths: a Keras model (a built-in name or
PATH.keras, converted with tf2onnx) or an ONNX classifier (PATH.onnx, imported with onnx and
onnxruntime only). One parser, one `--help`; the path is chosen from the parsed `--model`."""

from __future__ import annotations

import argparse
import math
import os

DEFAULT_OPSET = 17
PREPROCESSINGS = ("caffe", "tf", "torch", "none")  # what the classifier expects of raw 0..255 RGB
MAX_INPUT_SIDE = 8192  # --input-size: the self-check runs images of that size
KERAS_ONLY = {"weights": "imagenet", "plain_output": None, "opset": DEFAULT_OPSET, "seed": 0}  # flag: default
ONNX_ONLY = {"mean": None, "std": None, "layout": "auto", "input_size": None}


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line, like every other error; exit 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"export failed: arguments: {message} (see --help)\n")


def is_onnx(model: str) -> bool:
    """Whether `--model` names an ONNX file (the import) rather than a Keras model."""
    return model.lower().endswith(".onnx")


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three numbers R,G,B") from None
    if len(values) != 3 or not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected three finite numbers R,G,B")
    return values


def _size(text: str) -> tuple[int, int]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected H,W") from None
    if len(values) != 2 or not all(1 <= value <= MAX_INPUT_SIDE for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected two integers H,W from 1 to {MAX_INPUT_SIDE}")
    return values


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 0")
    return value


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m export.build",
        description="Write one self-checked, self-describing Grad-CAM .onnx file (predictions, feature maps, "
        "gradients, map) from a Keras classifier (checked against TensorFlow) or from any ONNX image "
        "classifier (torch.onnx.export, timm, tf2onnx...; onnx and onnxruntime only, no TensorFlow).",
        epilog="exit codes: 0 written, 1 export failed (nothing written), 2 bad arguments",
    )
    parser.add_argument("--model", default="resnet50",
                        help="a built-in Keras name, PATH.keras, or PATH.onnx (the import) (default resnet50)")
    parser.add_argument("--layer", help="target: Keras layer(s) a,b or ONNX tensor name, or auto "
                        "(default: the built-in model's own; else the map the global pooling reads)")
    parser.add_argument("--preprocessing", choices=PREPROCESSINGS,
                        help="what the model expects of raw 0..255 RGB (required for PATH.keras and PATH.onnx, "
                        "or --mean/--std for PATH.onnx)")
    parser.add_argument("--labels", help="JSON list of class names, or {\"0\": name, ...} "
                        "(default: ImageNet names for 1000 classes, else 'class N')")
    parser.add_argument("--score", choices=["logit", "probability"], default="logit",
                        help="the differentiated score: the logit (default, as in the paper) or, Keras only, "
                        "its probability")
    parser.add_argument("--output", help="where to write the .onnx (default models/<model>_gradcam.onnx)")
    keras = parser.add_argument_group("Keras models only")
    keras.add_argument("--weights", help="imagenet (default), none (random, seeded) or PATH")
    keras.add_argument("--plain-output", help="also write the plain classifier (probabilities only) here")
    keras.add_argument("--opset", type=_natural, help=f"ONNX opset (default {DEFAULT_OPSET})")
    keras.add_argument("--seed", type=_natural, help="seed for --weights none (default 0)")
    onnx = parser.add_argument_group("ONNX models only (--model PATH.onnx)")
    onnx.add_argument("--mean", type=_triple, help="R,G,B mean in 0..255 units (with --std, instead of --preprocessing)")
    onnx.add_argument("--std", type=_triple, help="R,G,B standard deviation in 0..255 units")
    onnx.add_argument("--layout", choices=["auto", "nchw", "nhwc"], help="the model's input layout (default auto)")
    onnx.add_argument("--input-size", type=_size, help="H,W: needed when the model's input size is dynamic")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line, every flag checked, defaults filled in for the path `--model` chooses."""
    parser = _parser()
    args = parser.parse_args(argv)
    onnx = is_onnx(args.model)
    for flag in (ONNX_ONLY if not onnx else KERAS_ONLY):
        if getattr(args, flag) is not None:
            option = "--" + flag.replace("_", "-")
            parser.error(f"{option} applies to {'PATH.onnx' if flag in ONNX_ONLY else 'Keras models'} only")
    for flag, default in (ONNX_ONLY if onnx else KERAS_ONLY).items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)
    for flag, path in (("--output", args.output), ("--plain-output", args.plain_output)):
        if path is not None and not path.strip():
            parser.error(f"{flag}: an empty path; give a file name")
    if (onnx or args.model.endswith(".keras")) and not os.path.isfile(args.model):
        parser.error(f"--model {args.model}: {'not a regular file' if os.path.exists(args.model) else 'no such file'}")
    if onnx:
        _check_import(parser, args)
    elif args.output and args.plain_output and os.path.realpath(args.output) == os.path.realpath(args.plain_output):
        parser.error("--output and --plain-output name the same file; the plain classifier would replace the model")
    if args.output is None:
        args.output = os.path.join("models", f"{os.path.splitext(os.path.basename(args.model))[0]}_gradcam.onnx")
    return args


def _check_import(parser: OneLineParser, args: argparse.Namespace) -> None:
    args.layer = args.layer or "auto"
    if args.score != "logit":
        parser.error(f"--score {args.score}: the ONNX import differentiates the logit")
    if (args.mean is None) != (args.std is None):
        parser.error("--mean and --std go together")
    if args.mean is not None and args.preprocessing is not None:
        parser.error("give --preprocessing or --mean/--std, not both")
    if args.mean is None and args.preprocessing is None:
        parser.error(f"say what the model expects of raw 0..255 RGB: --preprocessing {'|'.join(PREPROCESSINGS)} "
                     "or --mean R,G,B --std R,G,B")
    if args.std is not None and min(args.std) <= 0:
        parser.error("--std: every value must be positive")

"""`python -m export.build`: Keras classifier -> self-checked, self-describing Grad-CAM `.onnx`.

One line per step on stdout. Exit codes: 0 written; 1 the export failed (one line on
stderr says what and what to do; nothing is written); 2 bad command line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import sys
import time
import warnings
from importlib import metadata

from export.errors import ExportError, one_line
from export.quiet import captured_stderr

DEFAULT_OPSET = 17


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line, like every other error."""

    def error(self, message: str) -> None:
        self.exit(2, f"export failed: arguments: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m export.build",
        description="Export a Keras classifier as one ONNX model that returns predictions, "
        "feature maps, gradients and the Grad-CAM map, checked against TensorFlow.",
        epilog="exit codes: 0 written, 1 export failed (nothing written), 2 bad arguments",
    )
    parser.add_argument("--model", default="resnet50", help="a built-in name or PATH.keras (default resnet50)")
    parser.add_argument("--weights", default="imagenet", help="imagenet (default), none (random, seeded) or PATH")
    parser.add_argument("--layer", default=None,
                        help="target layer, several as a,b (multi-scale maps), or auto (default: the model's own)")
    parser.add_argument("--preprocessing", choices=["caffe", "tf", "torch", "none"],
                        help="what the graph does to raw 0..255 RGB (required for PATH.keras)")
    parser.add_argument("--labels", help="JSON list of class names (default: ImageNet names, or 'class N')")
    parser.add_argument("--score", choices=["logit", "probability"], default="logit",
                        help="the differentiated score: pre-softmax logit (default, as in the paper) or softmax")
    parser.add_argument("--output", help="where to write the .onnx (default models/<model>_gradcam.onnx)")
    parser.add_argument("--plain-output", help="also write the plain classifier (probabilities only) here")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--seed", type=int, default=0, help="seed for --weights none (default 0)")
    args = parser.parse_args(argv)
    for flag, path in (("--output", args.output), ("--plain-output", args.plain_output)):
        if path is not None and not path.strip():
            parser.error(f"{flag}: an empty path; give a file name")
    if args.output and args.plain_output and os.path.realpath(args.output) == os.path.realpath(args.plain_output):
        parser.error("--output and --plain-output name the same file; the plain classifier would replace the model")
    return args


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if any(value.lower().endswith(".onnx") for flag, value in zip(arguments, arguments[1:]) if flag == "--model") \
            or any(value.lower().startswith("--model=") and value.lower().endswith(".onnx") for value in arguments):
        from export.onnx_import.cli import main as import_onnx  # onnx + onnxruntime only, no TensorFlow

        return import_onnx(arguments)
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    debug = bool(os.environ.get("ONNXCAM_DEBUG"))
    try:
        with contextlib.nullcontext() if debug else captured_stderr():
            from export.convert import depthwise_grouped_convolutions

            with depthwise_grouped_convolutions():
                export(args)
    except ExportError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("export interrupted: nothing was written", file=sys.stderr)
        return 1
    except Exception as error:  # a bug of ours or of a library: still one line, no traceback
        if debug:
            raise
        print(f"export failed: unexpected {type(error).__name__}: {one_line(error)} "
              "(set ONNXCAM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


def export(args: argparse.Namespace) -> None:
    """Run the steps; raise ExportError with the user's one line when one fails."""
    started = time.monotonic()
    # Imported here so that `--help` and bad arguments answer without loading TensorFlow.
    import keras

    from export.classifier import load_classifier
    from export.convert import convert
    from export.one_hot import gather_one_hot_products
    from export.shrink import share_forward_weights
    from export.verify import relative_limit, self_check
    from export import contract
    from export.wrap import gradcam_function, is_linear, plain_function, resolve_layers, split

    keras.config.disable_interactive_logging()  # no download progress bars: one line per step

    classifier = load_classifier(args.model, args.weights, args.preprocessing, args.labels, args.seed)
    model = classifier.model
    print(f"model: {classifier.name}, {len(classifier.labels)} classes, input {classifier.input_size[0]}x"
          f"{classifier.input_size[1]}, preprocessing {classifier.preprocessing}, weights {classifier.weights_source}")
    layers = resolve_layers(model, args.layer or classifier.default_layer)
    body, head = split(model, layers)
    maps = [body.output, *head.outputs[:-1]]
    shapes = ", ".join(f"{name} ({'x'.join(str(d) for d in m.shape[1:])})" for name, m in zip(layers, maps))
    print(f"layer{'s' if len(layers) > 1 else ''}: {shapes}, score: {args.score}, "
          f"probabilities: {classifier.activation}{' (one per class)' if classifier.activation == 'sigmoid' else ''}")

    function = gradcam_function(body, head, classifier.preprocessing, args.score, classifier.input_size,
                                classifier.activation)
    outputs = contract.OUTPUTS[:3] + tuple(
        contract.layer_output(name, index) for index in range(len(layers)) for name in contract.LAYER_OUTPUTS
    )
    onnx_model = gather_one_hot_products(share_forward_weights(convert(function, args.opset, outputs)))
    print(f"converted: tf2onnx, opset {args.opset}, {time.monotonic() - started:.1f} s so far")

    linear_head = is_linear(head)
    figures = self_check(onnx_model.SerializeToString(), model, layers, classifier.preprocessing,
                         args.score, classifier.input_size, linear_head, classifier.activation)
    errors = figures["outputs"]
    worst = max(errors, key=lambda name: errors[name]["relative"] / relative_limit(name, linear_head))
    print(f"self-check vs {figures['reference']}: worst {worst} {errors[worst]['relative']:.1e} relative "
          f"(limit {relative_limit(worst, linear_head):.0e}{'' if linear_head else ', nonlinear head'}); "
          f"max abs {max(f['max_abs'] for f in errors.values()):.1e}")

    _set_metadata(onnx_model, classifier, layers, args, figures)
    output = args.output or os.path.join("models", f"{os.path.splitext(classifier.name)[0]}_gradcam.onnx")
    plain = args.plain_output and convert(
        plain_function(model, classifier.preprocessing, classifier.input_size, classifier.activation), args.opset,
        outputs=("probabilities",),
    )  # converted before anything is written: a failed conversion writes nothing
    size = write_atomically(output, onnx_model.SerializeToString())
    peak_gib = peak_rss_gib()
    print(f"wrote {output} ({size / 2**20:.1f} MiB) in {time.monotonic() - started:.1f} s, peak RSS {peak_gib:.2f} GiB")
    if plain:
        try:
            plain_size = write_atomically(args.plain_output, plain.SerializeToString())
        except ExportError as error:
            raise ExportError(f"{error}; the Grad-CAM model {output} was written") from None
        print(f"plain classifier: {args.plain_output} ({plain_size / 2**20:.1f} MiB; "
              f"the Grad-CAM model is {size / plain_size:.3f}x)")


def _set_metadata(onnx_model, classifier, layers: list[str], args: argparse.Namespace, figures: dict) -> None:
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from export import contract

    digest = hashlib.sha256()
    for weight in classifier.model.weights:
        digest.update(weight.numpy().tobytes())
    properties = {
        contract.META_FORMAT: contract.FORMAT,
        contract.META_MODEL: classifier.name,
        contract.META_LABELS: json.dumps(classifier.labels),
        contract.META_INPUT_SIZE: json.dumps(list(classifier.input_size)),
        contract.META_PREPROCESSING: classifier.preprocessing,
        contract.META_LAYER: layers[0],
        contract.META_LAYERS: json.dumps(layers),
        contract.META_SCORE: args.score,
        contract.META_ACTIVATION: classifier.activation,
        contract.META_WEIGHTS: json.dumps({
            "source": classifier.weights_source,
            "random": classifier.random_weights,
            "sha256": digest.hexdigest(),
            "sha256_of": "the weight tensors' bytes, in model.weights order",
        }),
        contract.META_VERSIONS: json.dumps({
            "onnxcam": package_version("onnxcam"),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__,
            "opset": args.opset,
        }),
        contract.META_SELF_CHECK: json.dumps(figures),
    }
    onnx.helper.set_model_props(onnx_model, properties)


def peak_rss_gib() -> float:
    """This process's peak RSS: the kernel's VmHWM, which starts afresh at exec (`ru_maxrss` carries
    over the high-water mark of the process it was forked from), else `ru_maxrss`."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 2**20
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def package_version(distribution: str) -> str:
    """The installed version of `distribution`, or a note that it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def write_atomically(path: str, data: bytes) -> int:
    """Write to a temporary file beside `path`, then rename: readers never see half a file, and
    no temporary file is left whatever fails. Temporaries that a killed export left behind (their
    process is gone) are removed first."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}.onnxcam-tmp-"
    temporary = os.path.join(folder, f"{prefix}{os.getpid()}")
    try:
        os.makedirs(folder, exist_ok=True)
        _remove_stale_temporaries(folder, prefix)
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise ExportError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(OSError):  # gone after the rename, or never made
            os.unlink(temporary)
    return len(data)


def _remove_stale_temporaries(folder: str, prefix: str) -> None:
    """Remove `prefix<pid>` files in `folder` whose process no longer runs."""
    for name in os.listdir(folder):
        pid = name.removeprefix(prefix)
        if name.startswith(prefix) and pid.isdigit() and not _running(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    raise SystemExit(main())

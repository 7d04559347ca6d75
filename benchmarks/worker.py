"""One measurement in a fresh process: `python -m benchmarks.worker SPEC.json`.

A process of its own keeps each measurement's peak RSS its own, and keeps TensorFlow out of the
onnxruntime measurements. SPEC names the kind and where to write the result (JSON).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from typing import Any

from benchmarks.process import peak_rss_mb
from benchmarks.timing import Budget, interleaved, summary


def onnx_latency(spec: dict[str, Any]) -> dict[str, Any]:
    """Interleaved timing of the onnxruntime variants at each batch size."""
    from benchmarks.onnx_runs import OnnxVariants

    variants = OnnxVariants(
        spec["gradcam"], spec["plain"], spec["device"], tuple(spec["variants"]), max(spec["batches"])
    )
    budget = Budget(**spec["budget"])
    result: dict[str, Any] = {name: {} for name in spec["variants"]}
    for batch in spec["batches"]:
        for name, seconds in interleaved(variants.calls(batch), budget).items():
            result[name][str(batch)] = summary(seconds, batch)
    return result


def onnx_rss(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of a process running one variant, after each batch size (smallest first)."""
    from benchmarks.onnx_runs import OnnxVariants

    variant = spec["variant"]
    variants = OnnxVariants(spec["gradcam"], spec["plain"], spec["device"], (variant,), max(spec["batches"]))
    result = {"after_load_mb": peak_rss_mb()}
    for batch in sorted(spec["batches"]):
        call = variants.calls(batch)[variant]
        call()
        call()
        result[str(batch)] = peak_rss_mb()
    return result


def tf_latency(spec: dict[str, Any]) -> dict[str, Any]:
    """Interleaved timing of the eager and tf.function recipes; saves the model's weights for
    the cold-start script; compares the heatmaps with those of the ONNX Grad-CAM graph
    `compare_with` (when it holds the same seeded random weights)."""
    from benchmarks import tf_recipe
    from benchmarks.images import model_batch

    model = tf_recipe.resnet50()
    model.save_weights(spec["save_weights"])
    calls = {"tf_eager": tf_recipe.eager_recipe(model), "tf_function": tf_recipe.function_recipe(model)}
    latency: dict[str, Any] = {name: {} for name in calls}
    budget = Budget(**spec["budget"])
    for batch in spec["batches"]:
        images = model_batch(batch)
        bound = {name: (lambda explain=explain, images=images: explain(images)) for name, explain in calls.items()}
        for name, seconds in interleaved(bound, budget).items():
            latency[name][str(batch)] = summary(seconds, batch)
    result: dict[str, Any] = {"latency": latency}
    if spec["compare_with"]:
        result["max_abs_difference_vs_onnx"] = _difference_vs_onnx(spec["compare_with"], calls["tf_function"])
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _difference_vs_onnx(gradcam_path: str, explain: Callable[[Any], Any]) -> float:
    """Largest difference between TF's normalised heatmaps and the ONNX graph's `cam`, normalised
    the same way, on 2 images: proof that both sides run the same network, layer and images."""
    import numpy as np

    from benchmarks.images import model_batch
    from runtime.session import open_session
    from runtime import contract

    images = model_batch(2)
    cam = open_session(gradcam_path, "cpu").run([contract.OUTPUT_CAM], {
        contract.INPUT_IMAGE: images, contract.INPUT_CLASS_INDEX: np.full((2, 1), -1, dtype=np.int64),
    })[0][:, 0]
    cam = cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-7)
    return float(np.abs(cam - explain(images)).max())


KINDS = {"onnx_latency": onnx_latency, "onnx_rss": onnx_rss, "tf_latency": tf_latency}


def main(argv: list[str]) -> int:
    with open(argv[0]) as file:
        spec = json.load(file)
    warnings.filterwarnings("ignore")
    result = KINDS[spec["kind"]](spec)
    with open(spec["result"], "w") as file:
        json.dump(result, file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

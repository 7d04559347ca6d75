"""Cost of runtime.evaluate per image and method: forward passes and seconds.

python -m benchmarks.evaluate [--model M.onnx] [--images N] [--steps 50]
Without --model it times the fake model tests/fake_model.py writes (32x32, no TensorFlow); with
a real export it times that model on the example photo. Prints a table, exits 0."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from runtime import METHODS, Explainer
from runtime.evaluate import baselines
from runtime.evaluate.run import BASELINES, METRICS, Counted, evaluate_map, model_score
from runtime.images import resize_for_model

from .images import photos


def measure(model: str, count: int, steps: int, batch_size: int) -> list[tuple[str, float, float, float]]:
    """(method, explain seconds / image, metric forward passes / image, metric seconds / image)."""
    explainer = Explainer(model, batch_size=batch_size)
    size = explainer.card.input_size
    images = [np.clip(np.rint(resize_for_model(p, size)), 0, 255).astype(np.uint8) for p in photos(count)]
    score = Counted(model_score(model))
    rows = []
    for method in [*METHODS, *BASELINES]:
        started = time.perf_counter()
        if method in METHODS:
            outcomes = [per[0] for per in explainer.explain_methods(images, [method], 1)]
            maps = [(o.explanation.maps[0].heatmap, o.explanation.maps[0].class_index) for o in outcomes]
        else:
            maps = [(baselines.baseline_maps(image, 0, i)[method], 0) for i, image in enumerate(images)]
        explained = time.perf_counter()
        score.passes = 0
        for image, (saliency, target) in zip(images, maps, strict=True):
            evaluate_map(score, image, saliency, target, METRICS, steps, batch_size, None)
        done = time.perf_counter()
        rows.append((method, (explained - started) / count, score.passes / count, (done - explained) / count))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__)
    parser.add_argument("--model", help="an onnxcam .onnx (default: the fake test model)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            from tests.fake_model import write_fake_model

            model = str(write_fake_model(Path(folder) / "fake.onnx"))
        rows = measure(model, args.images, args.steps, args.batch_size)
    print(f"model {args.model or 'fake (tests/fake_model.py)'}, {args.images} images, steps {args.steps}, "
          f"batch {args.batch_size}; metrics: deletion, insertion, average drop / increase")
    print(f"{'method':<10} {'explain s/img':>14} {'metric passes/img':>18} {'metric s/img':>13}")
    for method, explain, passes, seconds in rows:
        print(f"{method:<10} {explain:>14.4f} {passes:>18.0f} {seconds:>13.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

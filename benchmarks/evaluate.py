"""Cost of runtime.evaluate per map: forward passes, and time per forward pass against a plain
onnxruntime run of the very same batches.

python -m benchmarks.evaluate [--model M.onnx] [--images N] [--steps 50] [--batch-size 32]
Without --model it times the fake model tests/fake_model.py writes (32x32, no TensorFlow: there
the perturbed images cost more than the model); with a real export it times that model on the
example photo. For each metric group, every batch the metric scores is recorded and run again
through a plain `onnxruntime.InferenceSession(model).run(["probabilities"], ...)`: the ratio is
evaluate's wall time over that plain run's (1.0 = nothing but the forward passes). ROAD's sparse
solves are reported apart: they are no forward pass. Prints a table, exits 0."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime import Explainer, contract
from runtime.evaluate import baselines
from runtime.evaluate.run import ModelRuns, Settings, evaluate_map, normalisation_of
from runtime.images import resize_for_model

from .images import photos

GROUPS = {"deletion + insertion": ("deletion", "insertion"), "confidence (4 metrics)": ("average-drop",
          "increase-in-confidence", "drop-in-confidence", "confidence-change"), "road": ("road",)}


class Recorded:
    """A score callable that keeps a copy of every batch it scores, and the seconds spent in it."""

    def __init__(self, score) -> None:
        self.score, self.batches, self.seconds = score, [], 0.0

    def __call__(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        self.batches.append((images, classes))  # fresh arrays each call: no copy needed
        started = time.perf_counter()
        result = self.score(images, classes)
        self.seconds += time.perf_counter() - started
        return result


def plain_seconds(session: ort.InferenceSession, batches: list) -> float:
    """A plain onnxruntime run of the batches, fetching the probabilities only."""
    started = time.perf_counter()
    for images, classes in batches:
        session.run([contract.OUTPUT_PROBABILITIES], {contract.INPUT_IMAGE: images,
                                                      contract.INPUT_CLASS_INDEX: classes.reshape(-1, 1)})
    return time.perf_counter() - started


def measure(model: str, count: int, steps: int, batch_size: int) -> list[tuple[str, float, float, float, float]]:
    """Per group: (name, forward passes per map, evaluate s per pass, plain s per pass, solve s per map)."""
    explainer = Explainer(model, batch_size=batch_size)
    size = explainer.card.input_size
    images = [np.clip(np.rint(resize_for_model(p, size)), 0, 255).astype(np.uint8) for p in photos(count)]
    runs = ModelRuns(model, len(explainer.card.layers))
    plain = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    normalisation = normalisation_of(explainer.card.preprocessing)
    outcomes = [per[0] for per in explainer.explain_methods(images, ["gradcam"], 1)]
    maps = [(o.explanation.maps[0].heatmap, o.explanation.maps[0].class_index) for o in outcomes]
    layers = runs.feature_maps(np.stack(images).astype(np.float32))
    maps += [(baselines.baseline_maps(image, [a[i] for a in layers], 0, i)["random-cam"], target)
             for i, (image, (_, target)) in enumerate(zip(images, maps))]
    rows = []
    for group, chosen in GROUPS.items():
        settings = Settings(chosen, steps, batch_size, normalisation)
        forward = replay = solve = passes = 0.0
        for (saliency, target), image in zip(maps, images + images):
            score = Recorded(runs.score)
            started = time.perf_counter()
            evaluate_map(score, image, saliency, target, settings, None, None)
            total = time.perf_counter() - started
            # ROAD's time outside the model is its sparse solves, no forward pass: counted apart
            forward += score.seconds if group == "road" else total
            solve += total - score.seconds if group == "road" else 0.0
            replay += plain_seconds(plain, score.batches)
            passes += sum(len(b) for b, _ in score.batches)
        rows.append((group, passes / len(maps), forward / passes, replay / passes, solve / len(maps)))
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
    print(f"model {args.model or 'fake (tests/fake_model.py)'}, {args.images} images x (gradcam + random-cam), "
          f"steps {args.steps}, batch {args.batch_size}")
    print(f"{'metrics':<24} {'passes/map':>10} {'evaluate ms/pass':>17} {'plain ort ms/pass':>18} {'ratio':>6} "
          f"{'solves s/map':>13}")
    total = sum(passes for _, passes, *_ in rows)
    overall = ("all (weighted by passes)", total, sum(p * ours for _, p, ours, _, _ in rows) / total,
               sum(p * plain for _, p, _, plain, _ in rows) / total, sum(solve for *_, solve in rows))
    for group, passes, ours, plain, solve in [*rows, overall]:
        print(f"{group:<24} {passes:>10.0f} {ours * 1e3:>17.3f} {plain * 1e3:>18.3f} {ours / plain:>6.2f} "
              f"{solve:>13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`/work/torchvenv/bin/python -m benchmarks.swin_layer OUT [--seed S]`: which layer to explain in a Swin (issue #26),
measured with `runtime.evaluate` (deletion, insertion, ROAD, pointing game) on a trained model.

There are no Swin weights offline and random weights say nothing about faithfulness, so a small
torchvision `SwinTransformer` (swin_t's code: patch 4, embed 32, depths (2, 2), heads (2, 4), window 8;
64x64 input, so the last stage is one 8x8 window as swin_t's 7x7 is) is trained on the test suite's
shapes task (`tests/keras_models.draw_shapes`: one circle, square or triangle on clutter), exported
(legacy exporter, opset 17, dynamic batch), imported twice (`--layer` the final norm's pooled map, which `--layer auto` took before
2026-12-06, and `--layer auto`, now the last block's `norm1`, pytorch-grad-cam's documented Swin
layer) and evaluated on the same held-out
images with their boxes. Set ONNXCAM_PYTHON to the project venv's python (for the import and
evaluate). Needs the scratch venv of benchmarks/torch_compare.py (torch, torchvision,
onnx, onnxruntime, scipy, opencv). Single-threaded torch: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np

sys.modules.setdefault("keras", types.ModuleType("keras"))  # draw_shapes needs only cv2 and numpy
from tests.keras_models import SHAPES, draw_shapes  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
METHODS = "gradcam,layercam"
METRICS = ("deletion", "insertion", "road", "pointing-game")
FINAL_NORM = "/permute/Transpose_output_0"  # the final norm's NHWC map in the legacy export's names


def as_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(((images / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32))


def train(epochs: int, seed: int = 0):
    """The small Swin trained on 3000 shapes images; (model, held-out accuracy on 500 others)."""
    import torch
    from torchvision.models.swin_transformer import SwinTransformer

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[8, 8],
                            stochastic_depth_prob=0.0, num_classes=len(SHAPES))
    images, labels, _ = draw_shapes(3000, seed=10)
    x, y = as_tensor(images), torch.from_numpy(labels)
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.05)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    model.eval()
    test, test_labels, _ = draw_shapes(500, seed=12)
    with torch.no_grad():
        accuracy = float((model(as_tensor(test)).argmax(1).numpy() == test_labels).mean())
    return model, accuracy


def export(model, path: Path) -> None:
    """Legacy export with a dynamic batch."""
    import torch

    torch.onnx.export(model, (torch.zeros(2, 3, 64, 64),), str(path), opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def evaluation_images(folder: Path, count: int) -> list[str]:
    """Held-out shapes as PNG files and their boxes.json (pointing game); the paths."""
    images, labels, boxes = draw_shapes(count, seed=11)
    folder.mkdir(parents=True, exist_ok=True)
    paths, truth = [], {}
    for i, (image, label, box) in enumerate(zip(images, labels, boxes)):
        path = folder / f"shape_{i:03d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(str(path))
        truth[str(path)] = {str(int(label)): [[int(v) for v in box]]}
    (folder / "boxes.json").write_text(json.dumps(truth))
    return paths


def run(*command: str) -> str:
    """The project's tool (`python -m ...`) under $ONNXCAM_PYTHON (its venv), else this Python; its stdout."""
    done = subprocess.run([os.environ.get("ONNXCAM_PYTHON", sys.executable), "-m", *command], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:1])} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.swin_layer", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the models, images and evaluate reports")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--images", type=int, default=48, help="held-out evaluation images")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the initialisation and batches")
    args = parser.parse_args(argv)
    out, epochs, count, seed = args.out, args.epochs, args.images, args.seed
    out.mkdir(parents=True, exist_ok=True)
    model, accuracy = train(epochs, seed)
    export(model, out / "swin.onnx")
    paths = evaluation_images(out / "images", count)
    print(f"small Swin, {epochs} epochs, seed {seed}: held-out accuracy {accuracy:.3f}; {count} evaluation images")
    results = {}
    for label, layer in (("final norm (auto before)", FINAL_NORM), ("auto: last block's norm1", "auto")):
        model_path = out / f"swin_{len(results)}.onnx"
        log = run("export.build", "--model", str(out / "swin.onnx"), "--preprocessing", "torch", "--layer", layer,
                  "--output", str(model_path))
        used = next((line for line in log.splitlines() if line.startswith("layer:")), layer)
        print(f"{label}: {used.split(', head:')[0]}")
        folder = out / f"eval_{len(results)}"
        run("runtime.evaluate", *paths, "--model", str(model_path), "--methods", METHODS, "--out", str(folder),
            "--boxes", str(out / "images" / "boxes.json"), "--metrics", ",".join(METRICS), "--seed", "0")
        results[label] = json.loads((folder / "metrics.json").read_text())
    print("| layer | map | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for label, data in results.items():
        for name, per in data["methods"].items():
            if name in METHODS.split(",") or name == "random-cam":
                cells = [f"{per[m]['mean']:.3f} [{per[m]['low']:.3f}, {per[m]['high']:.3f}]" if m in per else "-"
                         for m in METRICS]
                print(f"| {label} | {name} | " + " | ".join(cells) + " |")
    (final, auto) = results.values()
    for name in METHODS.split(","):
        wins = {m: f"{int(np.sum(np.array(auto['values'][name][m]) > np.array(final['values'][name][m])))}"
                   f" of {len(auto['values'][name][m])}" for m in METRICS}
        print(f"{name}: images where auto's (norm1's) value is higher than the final norm's: {wins}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

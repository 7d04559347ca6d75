"""`python -m benchmarks.all_models`: export and check every built-in model, then time it.

For each model: `python -m export.build --model NAME --weights none` (random weights, offline)
with the plain classifier beside it; the export's own self-check (every output against a
float64 TensorFlow GradientTape, batch 4 x 3 and 1 x 1) gives the parity figure; then both
files are timed in onnxruntime on the CPU at batch 1, alternating call by call (Grad-CAM fetching
`cam`, the runtime's default path, against plain classification; ratio = median of the pairs'),
and every runtime method explains a photo with it (Score-CAM limited to 16 channels). Prints a
Markdown table and writes it to `benchmarks/all_models.md`. Takes about 25 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime

from benchmarks.timing import Budget, interleaved
from runtime import METHODS, Explainer

ROOT = Path(__file__).resolve().parents[1]
MODELS = (
    "resnet50", "resnet101", "resnet50v2", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "efficientnet_v2_b0", "densenet121", "xception", "inception_v3", "vgg16", "convnext_tiny",
)
COLUMNS = ("model", "layer", "parity: worst relative error", "MiB", "x plain", "export s", "export peak GiB",
           "Grad-CAM ms", "plain ms", "ratio", "methods")


def measure(name: str, folder: Path, repeats: int) -> dict[str, str]:
    """Export one model and time it; a failed export gives a row saying why."""
    gradcam, plain = folder / f"{name}.onnx", folder / f"{name}_plain.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "export.build", "--model", name, "--weights", "none",
         "--output", str(gradcam), "--plain-output", str(plain)],
        cwd=ROOT, capture_output=True, text=True,
    )
    if result.returncode != 0:
        return {"model": name, "layer": result.stderr.strip().splitlines()[-1][:120]}
    out = result.stdout
    layer = re.search(r"^layers?: (.+), score", out, re.M).group(1)
    worst, error, limit = re.search(r"worst (\S+) (\S+) relative \(limit ([^,)]+)", out).groups()
    parity = f"{error} ({worst}; limit {limit})"
    size, export_s, peak = re.search(r"wrote .+ \((\S+) MiB\) in (\S+) s, peak RSS (\S+) GiB", out).groups()
    ratio = re.search(r"model is (\S+)x", out).group(1)
    cam_session = onnxruntime.InferenceSession(str(gradcam), providers=["CPUExecutionProvider"])
    plain_session = onnxruntime.InferenceSession(str(plain), providers=["CPUExecutionProvider"])
    height, width = cam_session.get_inputs()[0].shape[1:3]
    image = np.random.default_rng(0).uniform(0, 255, (1, height, width, 3)).astype(np.float32)
    cam_feeds = {"image": image, "class_index": np.full((1, 1), -1, np.int64)}
    seconds = interleaved({
        "gradcam": lambda: cam_session.run(["probabilities", "explained_class", "cam"], cam_feeds),
        "plain": lambda: plain_session.run(["probabilities"], {"image": image}),
    }, Budget(warmup=1, min_rounds=repeats, min_seconds=0.0, max_rounds=repeats))
    cam_ms, plain_ms = (statistics.median(seconds[name]) * 1000 for name in ("gradcam", "plain"))
    ratio_ms = statistics.median(a / b for a, b in zip(seconds["gradcam"], seconds["plain"]))
    methods = methods_that_run(gradcam)
    for path in (gradcam, plain):
        path.unlink()
    return {
        "model": name, "layer": layer, "parity: worst relative error": parity, "MiB": size, "x plain": ratio,
        "export s": export_s, "export peak GiB": peak, "Grad-CAM ms": f"{cam_ms:.1f}",
        "plain ms": f"{plain_ms:.1f}", "ratio": f"{ratio_ms:.2f}", "methods": methods,
    }


def methods_that_run(path: Path) -> str:
    """Every runtime method on examples/cat.jpg: "all 7" or the ones that failed and why."""
    failed = []
    for method in METHODS:
        try:
            explainer = Explainer(path, device="cpu", method=method, max_channels=16)
            heatmap = explainer.explain(str(ROOT / "examples" / "cat.jpg"), top_k=2).heatmaps[0]
            if heatmap.shape != (300, 451) or not np.isfinite(heatmap).all() or heatmap.max() > 1:
                failed.append(f"{method}: bad heatmap")
        except Exception as error:  # a table row, not a crash: say which method and why
            failed.append(f"{method}: {type(error).__name__}")
    return f"all {len(METHODS)}" if not failed else "; ".join(failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.all_models", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs of each graph per model (default 30)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "all_models.md"))
    args = parser.parse_args(argv)
    rows = []
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            row = measure(name, Path(folder), args.repeats)
            rows.append("| " + " | ".join(row.get(column, "") for column in COLUMNS) + " |")
            print(rows[-1], flush=True)
    machine = f"{platform.processor() or platform.machine()}, {platform.system()}, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"
    header = (f"# Every built-in model: export, parity, size, latency\n\n`python -m benchmarks.all_models`, "
              f"{time.strftime('%Y-%m-%d')}, {machine}; random weights (`--weights none`), CPU, batch 1, "
              f"median of {args.repeats} runs of each graph, alternating; ratio: median of the per-pair "
              "ratios. Parity: the export's self-check, every output against a float64 TensorFlow "
              "GradientTape.\n\n")
    table = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n" + "\n".join(rows) + "\n"
    Path(args.output).write_text(header + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

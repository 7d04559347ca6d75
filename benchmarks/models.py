"""The two ONNX files the benchmark runs: reused when valid, else exported (and measured)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks.process import run_measured

GRADCAM_NAME = "resnet50_gradcam.onnx"
PLAIN_NAME = "resnet50_plain.onnx"
RANDOM_WEIGHTS = "none (random, seed 0)"


@dataclass(frozen=True)
class Models:
    gradcam: str
    plain: str
    weights: str  # the Grad-CAM file's onnxcam.weights source


def check(gradcam: str, plain: str) -> Models:
    """Both files usable: the runtime opens the Grad-CAM model, onnxruntime the plain one with an
    `image` input and a `probabilities` output. Raises with the reason if not."""
    from runtime import Explainer, contract
    from runtime.session import open_session

    card = Explainer(gradcam, device="cpu").card
    session = open_session(plain, "cpu")
    inputs = [value.name for value in session.get_inputs()]
    outputs = [value.name for value in session.get_outputs()]
    if inputs != [contract.INPUT_IMAGE] or outputs != [contract.OUTPUT_PROBABILITIES]:
        raise ValueError(f"{plain}: not a plain classifier (inputs {inputs}, outputs {outputs})")
    return Models(gradcam, plain, str(card.weights.get("source", "unknown")))


def export(folder: str) -> dict[str, Any]:
    """`python -m export.build --weights none` into `folder`, in a child process: wall time, the
    child's peak RSS, both files' sizes. Raises RuntimeError with export's own line on failure."""
    os.makedirs(folder, exist_ok=True)
    gradcam, plain = os.path.join(folder, GRADCAM_NAME), os.path.join(folder, PLAIN_NAME)
    finished = run_measured([
        sys.executable, "-m", "export.build", "--weights", "none", "--output", gradcam, "--plain-output", plain,
    ])
    if finished.returncode != 0:
        raise RuntimeError(f"export failed: {finished.last_error_line()}")
    gradcam_mb, plain_mb = os.path.getsize(gradcam) / 2**20, os.path.getsize(plain) / 2**20
    return {
        "seconds": finished.seconds,
        "peak_rss_mb": finished.peak_rss_mb,
        "gradcam_mb": gradcam_mb,
        "plain_mb": plain_mb,
        "size_ratio": gradcam_mb / plain_mb,
        "gradcam": gradcam,
        "plain": plain,
    }

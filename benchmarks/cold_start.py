"""Cold start: a new process from its start to its exit, by which the first overlay is on disk."""

from __future__ import annotations

import glob
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

from benchmarks.images import IMAGE
from benchmarks.process import run_measured

RUNS = 3


def runtime_command(gradcam: str, device: str) -> Callable[[str], list[str]]:
    """`python -m runtime examples/cat.jpg` writing the top class's overlay into a folder."""
    return lambda out_dir: [sys.executable, "-m", "runtime", str(IMAGE), "--model", gradcam,
                            "--out", out_dir, "--top-k", "1", "--device", device]


def tf_command(weights: str) -> Callable[[str], list[str]]:
    """The TF recipe script (benchmarks/tf_cold_start.py) on the same photo."""
    return lambda out_dir: [sys.executable, "-m", "benchmarks.tf_cold_start", str(IMAGE), weights, out_dir]


def measure(command: Callable[[str], list[str]], out_dir: str) -> dict[str, Any]:
    """One untimed run to warm the disk cache, then RUNS timed ones (perf_counter around the
    child process), each into a new folder that must hold an overlay afterwards."""
    seconds, peaks = [], []
    for run in range(RUNS + 1):
        folder = os.path.join(out_dir, f"run{run}")
        finished = run_measured(command(folder))
        if finished.returncode != 0:
            raise RuntimeError(finished.last_error_line())
        if not glob.glob(os.path.join(folder, "*_overlay.png")):
            raise RuntimeError(f"no overlay written into {folder}")
        if run:
            seconds.append(finished.seconds)
            peaks.append(finished.peak_rss_mb)
    return {"median_s": statistics.median(seconds), "runs_s": seconds, "peak_rss_mb": max(peaks)}

"""The machine a run measured: CPU, cores, RAM, OS, GPU, versions, load. Imports no TensorFlow."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

VERSIONS = ("onnxruntime", "onnxruntime-gpu", "tensorflow", "keras", "tf2onnx", "onnx", "numpy",
            "opencv-python-headless", "pillow")


def describe(device: str) -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gib": _mem_total_gib(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {name: version for name in VERSIONS if (version := _version(name))},
        "gpu": _gpu() if device == "cuda" else None,
        "load_average_at_start": os.getloadavg(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release()["PRETTY_NAME"]
    except (OSError, KeyError):
        return platform.platform()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _gpu() -> str:
    """Name, memory and driver of each GPU as nvidia-smi reports them."""
    try:
        answer = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (nvidia-smi unavailable)"
    return "; ".join(line.strip() for line in answer.stdout.splitlines() if line.strip())

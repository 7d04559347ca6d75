"""DIR/manifest.json: the model, the settings that shape the rows, counts, versions; resume rules.

A model is known by its file's sha256: two files that differ in anything (preprocessing, labels,
weights) are two models, whatever their names and layers say."""

import json
import platform
from importlib import metadata
from typing import Any

import pyarrow.fs as pafs

from ..errors import OnnxcamError, one_line

from .storage import write_atomically

MANIFEST = "manifest.json"


class ManifestError(OnnxcamError):
    """The output folder cannot take this job; the message is one line saying what to do."""


def versions() -> dict[str, str]:
    """The versions that made the rows."""
    found = {"python": platform.python_version()}
    for package in ("onnxcam", "onnxruntime", "ray", "pyarrow", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def read(fs: pafs.FileSystem, folder: str) -> dict[str, Any] | None:
    """The manifest in `folder`, or None when there is none; ManifestError naming the file when
    it is not a manifest this job wrote (not JSON, or a field missing or of the wrong type)."""
    path = f"{folder}/{MANIFEST}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    try:
        with fs.open_input_stream(path) as stream:
            content = json.loads(stream.read())
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ManifestError(f"{path}: cannot read this manifest ({one_line(error)}); "
                            "choose another --output") from None
    shapes = {"model": dict, "settings": dict, "runs": int}
    wrong = [key for key, kind in shapes.items() if not isinstance(content, dict) or not isinstance(content.get(key), kind)]
    if not wrong and not isinstance(content["model"].get("sha256"), str):
        wrong = ["model.sha256"]
    if not wrong and (isinstance(content["runs"], bool) or content["runs"] < 0):
        wrong = ["runs"]
    if wrong:
        raise ManifestError(f"{path}: not a manifest of this batch job ('{wrong[0]}' missing or of the wrong "
                            "type); choose another --output")
    return content


def check_resume(previous: dict[str, Any] | None, has_results: bool, model: dict, settings: dict,
                 resume: bool, folder: str) -> int:
    """The run number of this job (0 for a new one); raises ManifestError when the folder holds
    another job's results: without --resume, or with another model file or other settings."""
    if not resume:
        if has_results or previous is not None:
            raise ManifestError(f"{folder}: holds an earlier job's results; pass --resume to finish it, "
                                "or choose another --output")
        return 0
    if previous is None:
        if has_results:
            raise ManifestError(f"{folder}: results without a manifest; cannot tell how they were made")
        return 0
    if previous["model"]["sha256"] != model["sha256"]:
        raise ManifestError(f"{folder}: made with another model file ({previous['model'].get('path')}, sha256 "
                            f"{previous['model']['sha256'][:12]}…; this one is {model['sha256'][:12]}…); "
                            "resume with that file")
    changed = [key for key in sorted(set(settings) | set(previous["settings"]))
               if settings.get(key) != previous["settings"].get(key)]
    if changed:
        key = changed[0]
        raise ManifestError(f"{folder}: made with {key}={previous['settings'].get(key)!r}, not "
                            f"{settings.get(key)!r}; resume with the same settings")
    return previous["runs"]


def write(fs: pafs.FileSystem, folder: str, content: dict[str, Any]) -> None:
    """Write the manifest atomically."""
    write_atomically(fs, f"{folder}/{MANIFEST}", json.dumps(content, indent=2).encode())

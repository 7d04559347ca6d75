"""DIR/manifest.json: the model, the settings that shape the rows, counts, versions; resume rules."""

import json
import platform
import uuid
from importlib import metadata
from typing import Any

import pyarrow.fs as pafs

MANIFEST = "manifest.json"


class ManifestError(Exception):
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
    """The manifest in `folder`, or None when there is none."""
    path = f"{folder}/{MANIFEST}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read())


def check_resume(previous: dict[str, Any] | None, has_results: bool, model: dict, settings: dict,
                 resume: bool, folder: str) -> int:
    """The run number of this job (0 for a new one); raises ManifestError when the folder holds
    another job's results: without --resume, or with another model or other settings."""
    if not resume:
        if has_results or previous is not None:
            raise ManifestError(f"{folder}: holds an earlier job's results; pass --resume to finish it, "
                                "or choose another --output")
        return 0
    if previous is None:
        if has_results:
            raise ManifestError(f"{folder}: results without a manifest; cannot tell how they were made")
        return 0
    if previous["model"] != model:
        raise ManifestError(f"{folder}: made with another model ({previous['model']['name']}, weights "
                            f"sha256 {previous['model']['weights_sha256'][:12]}); resume with that model")
    changed = [key for key in sorted(set(settings) | set(previous["settings"]))
               if settings.get(key) != previous["settings"].get(key)]
    if changed:
        key = changed[0]
        raise ManifestError(f"{folder}: made with {key}={previous['settings'].get(key)!r}, not "
                            f"{settings.get(key)!r}; resume with the same settings")
    return int(previous["runs"])


def write(fs: pafs.FileSystem, folder: str, content: dict[str, Any]) -> None:
    """Write the manifest atomically: a temporary beside it, then moved over it."""
    temporary = f"{folder}/.{MANIFEST}.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(temporary) as stream:
        stream.write(json.dumps(content, indent=2).encode())
    fs.move(temporary, f"{folder}/{MANIFEST}")

"""Image sets on disk: all of an image's files appear, or none; names that fit the file system."""

import os
import uuid
from collections.abc import Iterable

Buffer = bytes | bytearray | memoryview  # collections.abc.Buffer from Python 3.12
DEFAULT_NAME_MAX = 255
LONGEST_SUFFIX = 128  # bytes kept for _top<k>_<label ≤64>_<method>_heatmap.npy after a stem


def name_max(folder: str) -> int:
    """The longest file name, in bytes, that `folder`'s file system allows."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def shortened(stem: str, limit: int) -> str:
    """`stem` cut to at most `limit` bytes in the file system's encoding (whole characters)."""
    encoded = os.fsencode(stem)
    if len(encoded) <= limit:
        return stem
    cut = encoded[:limit]
    while cut:
        try:
            cut.decode("utf-8")
            break
        except UnicodeDecodeError as error:
            if error.start < len(cut) - 4:  # invalid in the middle: the name was not UTF-8 anyway
                break
            cut = cut[: error.start]
    return os.fsdecode(cut) or "image"


def probe_folder(folder: str) -> bool:
    """Create `folder` if needed and prove a file can be written and removed in it; raises
    OSError. Returns whether the folder was created."""
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".onnxcam-probe-{uuid.uuid4().hex[:12]}.tmp")
    with open(probe, "xb") as file:
        file.write(b"probe")
    os.unlink(probe)
    return created


def write_set(files: Iterable[tuple[str, Buffer | tuple[Buffer, ...]]]) -> None:
    """Write each (path, data) to a short temporary beside it as it comes (a generator may make
    each file's data when asked: one is held at a time), then rename them all into place. data:
    bytes-like, or a tuple of bytes-like parts written one after the other.
    On any failure (disk full, a signal, an error making the data) every temporary and every
    file renamed so far is removed and the error raised: the set appears whole or not at all.
    Files are not fsynced."""
    temporaries: list[str] = []
    paths: list[str] = []
    renamed: list[str] = []
    try:
        for path, data in files:
            temporary = os.path.join(os.path.dirname(path), f".onnxcam-{uuid.uuid4().hex[:16]}.tmp")
            temporaries.append(temporary)
            paths.append(path)
            with open(temporary, "xb") as file:
                file.writelines(data if isinstance(data, tuple) else (data,))
            del data  # not held while the next file's data is made
        for temporary, path in zip(temporaries, paths, strict=True):
            os.replace(temporary, path)
            renamed.append(path)
    except BaseException:
        for path in temporaries + renamed:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise

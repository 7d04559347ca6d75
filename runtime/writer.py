"""Atomic writes for the runtime, in one place: a file, or a set of files, appears whole or not
at all. Written under a temporary name beside the target (.onnxcam-*.tmp), then renamed into
place: a reader sees the old file or the whole new one, never a part. Not fsynced: a power cut
can lose the last few seconds' files (the system's write-back delay), never corrupt older ones."""

import os
import uuid
from collections.abc import Iterable

Buffer = bytes | bytearray | memoryview  # collections.abc.Buffer from Python 3.12
Data = Buffer | tuple[Buffer, ...]  # one buffer, or parts written one after the other


def probe_folder(folder: str) -> bool:
    """Create `folder` if needed and prove a file can be written and removed in it; raises
    OSError. Returns whether the folder was created."""
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    probe = _temporary(folder, "probe")
    with open(probe, "xb") as file:
        file.write(b"probe")
    os.unlink(probe)
    return created


def write_file(path: str | os.PathLike, data: Data) -> None:
    """Write one file atomically (see the module's docstring); raises OSError, leaving any old
    file as it was and no temporary."""
    write_set([(os.fspath(path), data)])


def write_set(files: Iterable[tuple[str, Data]]) -> None:
    """Write each (path, data) to a temporary beside it as it comes (a generator may make each
    file's data when asked: one is held at a time), then rename them all into place.
    On any failure (disk full, a signal, an error making the data) every temporary and every
    file renamed so far is removed and the error raised: the set appears whole or not at all."""
    temporaries: list[str] = []
    paths: list[str] = []
    renamed: list[str] = []
    try:
        for path, data in files:
            temporary = _temporary(os.path.dirname(path))
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


def _temporary(folder: str, kind: str = "") -> str:
    """A fresh hidden temporary name in `folder`: .onnxcam-[<kind>-]<random>.tmp"""
    return os.path.join(folder, f".onnxcam-{kind + '-' if kind else ''}{uuid.uuid4().hex[:16]}.tmp")

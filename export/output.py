"""Writing the exported file, for both paths: the one atomic write, and the peak memory the
"wrote ..." line reports."""

from __future__ import annotations

import contextlib
import os
import resource

from .errors import ExportError


def write_atomically(path: str, data: bytes) -> int:
    """Write to a temporary file beside `path`, then rename: readers never see half a file, and
    no temporary file is left whatever fails. Temporaries that a killed export left behind (their
    process is gone) are removed first."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}.onnxcam-tmp-"
    temporary = os.path.join(folder, f"{prefix}{os.getpid()}")
    try:
        os.makedirs(folder, exist_ok=True)
        _remove_stale_temporaries(folder, prefix)
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise ExportError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(OSError):  # gone after the rename, or never made
            os.unlink(temporary)
    return len(data)


def _remove_stale_temporaries(folder: str, prefix: str) -> None:
    """Remove `prefix<pid>` files in `folder` whose process no longer runs."""
    for name in os.listdir(folder):
        pid = name.removeprefix(prefix)
        if name.startswith(prefix) and pid.isdigit() and not _running(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mib(size: int) -> str:
    """A file size in MiB for the "wrote" line: one decimal, three below 1 MiB (never "0.0")."""
    return f"{size / 2**20:.1f}" if size >= 2**20 else f"{size / 2**20:.3f}"


def peak_rss_gib() -> float:
    """This process's peak RSS: the kernel's VmHWM, which starts afresh at exec (`ru_maxrss` carries
    over the high-water mark of the process it was forked from), else `ru_maxrss`."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 2**20
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

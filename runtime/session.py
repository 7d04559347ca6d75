"""The onnxruntime session on the chosen device.

onnxruntime-gpu offers CUDA whether or not the CUDA libraries can be loaded. When they cannot,
creating a session prints onnxruntime's own error log (several coloured lines) on stderr and
falls back to the CPU. Here the CUDA libraries are first preloaded from pip's nvidia-* packages
(onnxruntime's `preload_dlls`, as its CUDA documentation advises), the native log is caught, and a
failure becomes one line: an error for device cuda, a warning for auto (which then runs on the CPU).
"""

import contextlib
import io
import os
import re
import sys
import warnings
from collections.abc import Sequence

from .errors import ModelError, UsageError, one_line
from .native_stderr import native_stderr

# Importing onnxruntime may log a coloured warning on fd 2 when $HOME is not writable ("Failed to
# persist telemetry device ID"): caught here, and anything else it printed is passed on.
with native_stderr() as _import_log:
    import onnxruntime as ort
sys.stderr.write("".join(
    line for line in _import_log.getvalue().splitlines(keepends=True) if "telemetry" not in line
))

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
ORT_LOG_ERRORS_ONLY = 3


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """Providers for `device`: auto = CUDA when onnxruntime offers it, else CPU."""
    if device not in DEVICES:
        raise UsageError(f"device {device!r}: unknown (use {', '.join(DEVICES)})")
    if device == "cuda" and CUDA not in available:
        raise UsageError(
            f"device cuda: onnxruntime offers no {CUDA} (only {', '.join(available)}); "
            "install onnxruntime-gpu or use device cpu"
        )
    if device == "cpu" or CUDA not in available:
        return [CPU]
    return [CUDA, CPU]


def open_session(path: str, device: str) -> ort.InferenceSession:
    """A session for the model at `path` on `device` (auto, cpu or cuda)."""
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, not an .onnx file")
    if not os.path.isfile(path):
        raise ModelError(f"{path}: model file not found")
    providers = choose_providers(device, ort.get_available_providers())
    if CUDA not in providers:
        return _load(path, providers)
    with native_stderr() as log:
        _preload_cuda_libraries()
        session = _load(path, providers)
    text = log.getvalue()
    if session.get_providers()[0] == CUDA:
        sys.stderr.write(text)  # nothing, normally: whatever it is, it was not a failure to hide
        return session
    reason = cuda_failure(text)
    if device == "cuda":
        if "libcuda.so" in reason:
            advice = "no NVIDIA driver here (libcuda is the driver's library): use device cpu"
        else:
            advice = ("install the CUDA and cuDNN libraries it needs (pip install "
                      "'onnxruntime-gpu[cuda,cudnn]') or use device cpu")
        raise UsageError(f"device cuda: {CUDA} failed to load ({reason}); {advice}")
    warnings.warn(f"device auto: {CUDA} failed to load ({reason}), running on the CPU", stacklevel=3)
    return session


def cuda_failure(log: str) -> str:
    """The gist of onnxruntime's log of a failed CUDA load: the library that failed and what the
    provider requires, e.g. 'libcublasLt.so.13: cannot open shared object file: No such file or
    directory; requires cuDNN 9.* and CUDA 13.*'."""
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)
    parts = []
    if failed := re.search(r"with error: (.+)", log):
        parts.append(failed.group(1).strip())
    if required := re.search(r"Require (cuDNN \S+ and CUDA \S+?)\.?(?:\s|$)", log):
        parts.append(f"requires {required.group(1)}")
    return "; ".join(parts) or "onnxruntime gave no reason"


def _load(path: str, providers: list[str]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = ORT_LOG_ERRORS_ONLY
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own classes for each way a file is bad
        raise ModelError(f"{path}: cannot load model, corrupt or not ONNX ({one_line(error)})") from None


def _preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from pip's nvidia-* packages where they are installed. Skipped when
    torch (which loads its own) is imported or onnxruntime has no preload_dlls; best effort: its
    messages go nowhere, and a library still missing shows when the session loads."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or "torch" in sys.modules:
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(OSError, RuntimeError):
        preload()

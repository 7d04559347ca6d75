"""runtime/session.py: a CUDA provider that fails to load becomes one line, error or warning."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtime import Explainer, ModelError, UsageError
from runtime import session as session_module
from runtime.session import CPU, CUDA, cuda_failure
from tests.fake_model import write_fake_model

# What onnxruntime-gpu 1.31.1 wrote to stderr on this (GPU-less, CUDA-less) machine when a session
# asked for CUDA: colour codes, an error and a warning, then the session ran on the CPU.
ORT_GPU_LOG = (
    "\x1b[1;31m2026-11-27 04:25:04.384662897 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] "
    "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& "
    "onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
    "/tmp/ortgpu_target/onnxruntime/capi/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: "
    "cannot open shared object file: No such file or directory\n\x1b[m\n"
    "\x1b[0;93m2026-11-27 04:25:04.384707354 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 "
    "CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. Require cuDNN 9.* and "
    "CUDA 13.*. Please install all dependencies as mentioned in the GPU requirements page "
    "(https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements), make sure "
    "they're in the PATH, and that your GPU is supported.\x1b[m\n"
)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return str(write_fake_model(tmp_path_factory.mktemp("model") / "fake.onnx"))


# The same with the nvidia-* packages of `pip install onnxruntime-gpu[cuda,cudnn]` preloaded: the CUDA
# libraries were found, the driver's was not (no GPU here).
ORT_GPU_NO_DRIVER_LOG = ORT_GPU_LOG.replace("libcublasLt.so.13", "libcuda.so.1")


def test_the_gist_of_onnxruntimes_log():
    assert cuda_failure(ORT_GPU_LOG) == (
        "libcublasLt.so.13: cannot open shared object file: No such file or directory; "
        "requires cuDNN 9.* and CUDA 13.*"
    )
    assert cuda_failure("") == "onnxruntime gave no reason"


def fail_cuda(monkeypatch, log: str) -> None:
    """onnxruntime offers CUDA; creating a session writes `log` to fd 2 and runs on the CPU."""
    real_session = ort.InferenceSession

    def failing_session(path, sess_options=None, providers=()):
        os.write(2, log.encode())
        return real_session(path, sess_options=sess_options, providers=[CPU])

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", failing_session)
    monkeypatch.setattr(session_module, "_preload_cuda_libraries", lambda: None)


@pytest.fixture
def cuda_that_fails(monkeypatch):
    fail_cuda(monkeypatch, ORT_GPU_LOG)


def test_device_cuda_that_fails_to_load_is_one_error_line(model_path, cuda_that_fails, capfd):
    with pytest.raises(UsageError) as raised:
        Explainer(model_path, device="cuda")
    message = str(raised.value)
    assert message.startswith(f"device cuda: {CUDA} failed to load (libcublasLt.so.13: cannot open")
    assert "requires cuDNN 9.* and CUDA 13.*" in message and "\n" not in message
    assert capfd.readouterr().err == ""  # onnxruntime's own lines were caught


def test_a_missing_driver_is_named_as_such(model_path, monkeypatch):
    fail_cuda(monkeypatch, ORT_GPU_NO_DRIVER_LOG)
    with pytest.raises(UsageError, match=r"\(libcuda.so.1: cannot open shared object file: No such file or "
                       r"directory; requires cuDNN 9.\* and CUDA 13.\*\); no NVIDIA driver here"):
        Explainer(model_path, device="cuda")


def test_device_auto_warns_once_and_runs_on_the_cpu(model_path, cuda_that_fails, capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explainer = Explainer(model_path, device="auto")
    assert explainer.provider == CPU
    assert [str(w.message) for w in caught] == [
        f"device auto: {CUDA} failed to load (libcublasLt.so.13: cannot open shared object file: No such "
        "file or directory; requires cuDNN 9.* and CUDA 13.*), running on the CPU"
    ]
    assert capfd.readouterr().err == ""


def test_the_cli_says_it_in_one_line_and_exits_2(model_path, cuda_that_fails, tmp_path, capfd):
    from runtime.cli import main
    from PIL import Image

    from tests.fake_model import blob_image

    image = str(tmp_path / "blob.png")
    Image.fromarray(blob_image(32, 32, (0, 0, 8, 8))).save(image)
    assert main([image, "--model", model_path, "--out", str(tmp_path / "out"), "--device", "cuda"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"onnxcam: device cuda: {CUDA} failed to load (libcublasLt")
    assert not (tmp_path / "out").exists()
    assert main([image, "--model", model_path, "--out", str(tmp_path / "out"), "--device", "auto"]) == 0
    lines = capfd.readouterr().err.splitlines()
    assert lines[0].startswith(f"onnxcam: warning: device auto: {CUDA} failed to load (libcublasLt")
    assert "on CPUExecutionProvider" in lines[1]


def test_a_directory_as_model_path_says_so(tmp_path):
    with pytest.raises(ModelError, match=r"is a directory, not an \.onnx file$"):
        Explainer(tmp_path, device="cpu")


def test_no_telemetry_warning_when_home_is_not_writable(tmp_path):
    """onnxruntime logs a coloured 'Failed to persist telemetry device ID' line on import when
    $HOME is unusable (here a file: root may write into read-only folders)."""
    model = write_fake_model(tmp_path / "fake.onnx")
    code = f"from runtime import Explainer; Explainer({str(model)!r}, device='cpu'); print('ok')"
    environment = {**os.environ, "HOME": "/dev/null"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment, timeout=120, cwd=Path(__file__).parent.parent)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


class _OnCuda:
    """A real CPU session that says it runs on CUDA first, as a working onnxruntime-gpu does."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session

    def get_providers(self) -> list[str]:
        return [CUDA, CPU]

    def __getattr__(self, name: str):
        return getattr(self._session, name)


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_cuda_that_loads_is_used_after_one_preload(model_path, monkeypatch, capfd, device):
    real_session = ort.InferenceSession
    asked, preloads = [], []

    def session_on_cuda(path, sess_options=None, providers=()):
        asked.append(list(providers))
        return _OnCuda(real_session(path, sess_options=sess_options, providers=[CPU]))

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", session_on_cuda)
    monkeypatch.setattr(session_module, "_preload_cuda_libraries", lambda: preloads.append(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning either
        explainer = Explainer(model_path, device=device)
    assert explainer.provider == CUDA and asked == [[CUDA, CPU]] and preloads == [1]
    assert explainer.explain(np.zeros((32, 32, 3), np.uint8)).maps  # it runs
    assert capfd.readouterr().err == ""


def test_the_preload_is_quiet_and_best_effort(monkeypatch, capfd):
    calls = []

    def noisy_failing_preload():
        calls.append(1)
        print("preloading nvidia libraries...")
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(ort, "preload_dlls", noisy_failing_preload, raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    session_module._preload_cuda_libraries()
    assert calls == [1] and capfd.readouterr() == ("", "")


def test_no_preload_when_torch_brought_its_own_libraries(monkeypatch):
    calls = []
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append(1), raising=False)
    monkeypatch.setitem(sys.modules, "torch", object())
    session_module._preload_cuda_libraries()
    assert calls == []

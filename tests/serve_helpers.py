"""Helpers for the serve tests: a small photo-like PNG, a server subprocess on a free port."""

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import helper, numpy_helper
from PIL import Image

from tests.fake_model import blob_image, write_fake_model

ROOT = Path(__file__).resolve().parents[1]


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def red_blob_png(height: int = 40, width: int = 48) -> bytes:
    """A black image with a red box in its upper left: the fake model's class 0 (red)."""
    return png_bytes(blob_image(height, width, (4, 4, 20, 16), (255, 0, 0)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(model: Path, *flags: str, ready_timeout_s: float = 60):
    """`python -m runtime.serve` on 127.0.0.1 and a free port; yields (process, base URL); SIGTERM
    at the end. Its stderr goes to a file (a pipe nobody reads would block the server once full):
    `log(process)` reads it."""
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="onnxcam-serve-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.serve", "--model", str(model), "--port", str(port), "--device", "cpu", *flags],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    process.log_path = log_file.name
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited {process.returncode}: {log(process)}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in time")
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log_file.close()
        os.unlink(log_file.name)


def log(process: subprocess.Popen) -> str:
    """What a server_process has written to stderr so far."""
    return Path(process.log_path).read_text(errors="replace")


def write_slow_model(path: Path, convolutions: int = 4, channels: int = 256) -> Path:
    """The fake model (tests/fake_model.py) with a branch of `convolutions` 3x3 convolutions of
    `channels` channels that adds 0 x its mean to the input: the same answers, but each model run
    costs about convolutions x 1.2 GFLOP per image, so that a request is real work that can be
    cut short between runs."""
    model = onnx.load(write_fake_model(path))
    graph = model.graph
    rng = np.random.default_rng(0)
    producer = next(node for node in graph.node if node.output[0] == "nchw")
    producer.output[0] = "nchw_plain"
    nodes, previous, width = [], "nchw_plain", 3
    for index in range(convolutions):
        weight = (rng.standard_normal((channels, width, 3, 3)) / np.sqrt(9 * width)).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(weight, f"slow_weight_{index}"))
        nodes.append(helper.make_node("Conv", [previous, f"slow_weight_{index}"], [f"slow_{index}"], pads=[1, 1, 1, 1]))
        previous, width = f"slow_{index}", channels
    graph.initializer.append(numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "slow_zero"))
    nodes += [
        helper.make_node("ReduceMean", [previous], ["slow_mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["slow_mean", "slow_zero"], ["slow_nothing"]),
        helper.make_node("Add", ["nchw_plain", "slow_nothing"], ["nchw"]),
    ]
    position = list(graph.node).index(producer) + 1
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path

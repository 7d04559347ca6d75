"""Helpers for the serve tests: a small photo-like PNG, a server subprocess on a free port."""

import io
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.fake_model import blob_image

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
    """`python -m runtime.serve` on 127.0.0.1 and a free port; yields (process, base URL); SIGTERM at the end."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.serve", "--model", str(model), "--port", str(port), "--device", "cpu", *flags],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited {process.returncode}: {process.stderr.read().decode()}")
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

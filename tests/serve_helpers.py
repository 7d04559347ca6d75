"""Helpers for the serve tests: a small photo-like PNG, a server subprocess on a free port."""

import asyncio
import io
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import onnx
from onnx import helper, numpy_helper
from PIL import Image

from runtime.methods import METHODS
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


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A /proc/PID/status memory field in KiB: VmRSS (now) or VmHWM (peak)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


async def raw_request(url: str, head: bytes, body: bytes = b"", wait_s: float = 0.0) -> bytes:
    """Send `head` and `body` on a new connection, wait `wait_s`, then read what came back (at most
    64 KiB, 5 s) and close: the building block of the slow and vanishing clients below."""
    address = urlparse(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(head + body)
        await asyncio.wait_for(writer.drain(), 10)
        await asyncio.sleep(wait_s)
        return await asyncio.wait_for(reader.read(65536), 5) if wait_s >= 0 else b""
    except (OSError, asyncio.TimeoutError):
        return b""
    finally:
        writer.close()


def post_head(path: str, length: int, content_type: str = "image/png") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n".encode()


async def slow_headers(url: str, stop: asyncio.Event) -> None:
    """A client that sends its request head one byte a second, reconnecting when dropped."""
    address = urlparse(url)
    head = post_head("/v1/explain", 100)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(address.hostname, address.port)
            for byte in head:
                if stop.is_set():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1)
            writer.close()
        except OSError:
            await asyncio.sleep(0.1)


async def held_body(url: str, stop: asyncio.Event, declared: int, sent: int) -> None:
    """A client that declares `declared` bytes, sends `sent` of them and waits."""
    while not stop.is_set():
        await raw_request(url, post_head("/v1/explain", declared), b"\0" * sent, wait_s=2)


async def vanishing(url: str, stop: asyncio.Event, image: bytes) -> None:
    """A client that sends a whole request, or half a body, and closes without reading."""
    while not stop.is_set():
        await raw_request(url, post_head("/v1/explain?method=scorecam", len(image)), image, wait_s=-1)
        await raw_request(url, post_head("/v1/explain", len(image)), image[: len(image) // 2], wait_s=-1)
        await asyncio.sleep(0.05)


async def heavy_and_bad(url: str, stop: asyncio.Event, big: bytes, image: bytes) -> list[int]:
    """Requests of issue 23's items 1, 3 and 6 one after another: all the maps and images of a
    2000 x 2000 image (refused), as much as the budget lets through, Score-CAM with aug_smooth,
    and a multipart body without its boundary. Returns their statuses."""
    statuses = []
    every_method = ",".join(METHODS)
    asks = [
        (f"/v1/explain?method={every_method}&explain_top=4&include=overlay,heatmap", big, "image/png"),
        ("/v1/explain?explain_top=4&include=overlay,heatmap", big, "image/png"),
        ("/v1/explain?method=scorecam&aug_smooth=1&explain_top=4", image, "image/png"),
        ("/v1/explain", b"--x\r\n\r\n", "multipart/form-data"),
    ]
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while not stop.is_set():
            for path, body, content_type in asks:
                try:
                    response = await client.post(path, content=body, headers={"Content-Type": content_type})
                    statuses.append(response.status_code)
                except httpx.TransportError:
                    statuses.append(-1)
    return statuses


async def well_behaved(url: str, stop: asyncio.Event, image: bytes, seconds: list[float], statuses: list[int]) -> None:
    """A client like the page: one image, top 3, its overlay back; one request after another."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = await client.post("/v1/explain?top_k=3&include=overlay", content=image, headers={"Content-Type": "image/png"})
            seconds.append(time.perf_counter() - started)
            statuses.append(response.status_code)


async def timed_clients(url: str, image: bytes, clients: int, duration_s: float) -> tuple[list[float], list[int]]:
    """`clients` well-behaved clients for `duration_s`: their latencies in s and their statuses."""
    stop = asyncio.Event()
    seconds: list[float] = []
    statuses: list[int] = []
    tasks = [asyncio.ensure_future(well_behaved(url, stop, image, seconds, statuses)) for _ in range(clients)]
    await asyncio.sleep(duration_s)
    stop.set()
    await asyncio.gather(*tasks)
    return seconds, statuses


async def abuse(url: str, duration_s: float, slow: int = 8, held: int = 8, held_mb: float = 19.0, declared_mb: float = 20.0) -> list[int]:
    """Issue 23's mixed abuse for `duration_s`: `slow` slow-header clients, `held` clients holding
    `held_mb` of a declared `declared_mb` body, two vanishing clients, two sending the heavy and
    bad requests. Returns the statuses the heavy and bad requests got."""
    big = png_bytes(np.zeros((2000, 2000, 3), np.uint8))
    image = red_blob_png(64, 64)
    stop = asyncio.Event()
    tasks = (
        [slow_headers(url, stop) for _ in range(slow)]
        + [held_body(url, stop, int(declared_mb * 2**20), int(held_mb * 2**20)) for _ in range(held)]
        + [vanishing(url, stop, image) for _ in range(2)]
        + [heavy_and_bad(url, stop, big, image) for _ in range(2)]
    )
    running = [asyncio.ensure_future(task) for task in tasks]
    await asyncio.sleep(duration_s)
    stop.set()
    results = await asyncio.gather(*running, return_exceptions=True)
    return [status for result in results if isinstance(result, list) for status in result]


def _abuse_process(url: str, duration_s: float, started: Any, results: Any) -> None:
    started.set()
    results.put(asyncio.run(abuse(url, duration_s)))


@contextmanager
def abuse_process(url: str, duration_s: float):
    """`abuse` in a process of its own (its sending would otherwise slow the measuring clients'
    event loop), started when this yields a function that waits for it and returns the statuses."""
    context = multiprocessing.get_context("spawn")
    results, started = context.Queue(), context.Event()
    process = context.Process(target=_abuse_process, args=(url, duration_s, started, results))
    process.start()
    started.wait(timeout=60)
    try:
        yield lambda: results.get(timeout=duration_s + 60)
    finally:
        process.join(timeout=duration_s + 60)
        if process.is_alive():
            process.kill()

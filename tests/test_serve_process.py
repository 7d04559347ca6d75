"""A real server process on 127.0.0.1: a bounded load run, the body limit on the wire, SIGTERM, bad flags."""

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from runtime import Explainer
from tests.fake_model import write_fake_model
from tests.serve_helpers import ROOT, log, memory_kib, png_bytes, server_process

CONNECTIONS = 200
REQUESTS_EACH = 10
BAD_EVERY = 10  # 10% bad requests


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_fake_model(tmp_path_factory.mktemp("serve_process") / "fake.onnx")


def rss_bytes(pid: int) -> int:
    return memory_kib(pid) * 1024


def sample_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [png_bytes(rng.integers(0, 256, (36 + i, 40, 3), dtype=np.uint8)) for i in range(5)]


def test_load_run_no_errors_exact_answers_bounded_memory(model_path):
    images = sample_images()
    explainer = Explainer(model_path, device="cpu")
    expected = [explainer.explain(image, top_k=2) for image in images]
    failures: list[str] = []
    counts = {"good": 0, "bad": 0}

    async def one(client: httpx.AsyncClient, n: int) -> None:
        if n % BAD_EVERY == 0:
            body = b"\x89PNG but not really" if n % 20 == 0 else images[0][:50]
            try:
                response = await client.post("/v1/explain?top_k=2", content=body)
            except httpx.TransportError as error:
                failures.append(f"connection error: {error!r}")
                return
            if response.status_code != 422:
                failures.append(f"bad request got {response.status_code}")
            counts["bad"] += 1
            return
        index = n % len(images)
        try:
            response = await client.post("/v1/explain?top_k=2", content=images[index])
        except httpx.TransportError as error:
            failures.append(f"connection error: {error!r}")
            return
        if response.status_code != 200:
            failures.append(f"good request got {response.status_code}: {response.text[:200]}")
            return
        document, want = response.json(), expected[index]
        if [p["index"] for p in document["predictions"]] != [p.index for p in want.predictions]:
            failures.append("predictions differ")
        for got, map_ in zip(document["maps"], want.maps, strict=True):
            if tuple(got["peak"]) != map_.peak or not np.allclose(got["cam"], map_.cam, atol=1e-6, rtol=0):
                failures.append("maps differ")
        counts["good"] += 1

    async def run(url: str, pid: int) -> tuple[int, int]:
        """CONNECTIONS clients, each sending REQUESTS_EACH requests one after another on its own connection."""
        done, rss_after_first = [0], [0]

        async def worker(client: httpx.AsyncClient, worker_index: int) -> None:
            for step in range(REQUESTS_EACH):
                await one(client, worker_index * REQUESTS_EACH + step)
                done[0] += 1
                if done[0] == CONNECTIONS:
                    rss_after_first[0] = rss_bytes(pid)

        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
            await asyncio.gather(*(worker(client, index) for index in range(CONNECTIONS)))
        return rss_after_first[0], rss_bytes(pid)

    with server_process(model_path, "--max-queue", "512", "--max-batch-size", "16", "--max-requests", "256", "--keep-alive-s", "60") as (process, url):
        first, last = asyncio.run(run(url, process.pid))
        metrics = httpx.get(f"{url}/metrics").text
    assert failures == []
    assert counts == {"good": 1800, "bad": 200}
    assert last - first < 50 * 1024 * 1024, (first, last)
    assert 'status="500"' not in metrics and 'onnxcam_requests_total{path="/v1/explain",status="200"} 1800.0' in metrics


def test_body_over_the_limit_is_refused_before_it_is_sent(model_path):
    with server_process(model_path, "--max-body-mb", "1") as (process, url):
        address = urlparse(url)
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 1000)
            reply = b""
            while b"}}" not in reply:  # answered with 49.999 MB still unsent
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
            reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert '"code":"body_too_large"' in reply


def test_sigterm_finishes_the_request_in_flight_and_exits_0(model_path):
    image = sample_images()[0]
    with server_process(model_path, "--max-wait-ms", "1500") as (process, url):  # the batcher holds it 1.5 s
        result = {}
        thread = threading.Thread(target=lambda: result.update(response=httpx.post(f"{url}/v1/explain", content=image, timeout=30)))
        thread.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        assert process.wait(timeout=30) == 0
    assert result["response"].status_code == 200


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "/nonexistent/m.onnx"], "--model /nonexistent/m.onnx: no such file"),
        (["--model", "MODEL", "--max-batch-size", "0"], "--max-batch-size 0: must be at least 1"),
        (["--model", "MODEL", "--autoscale", "3"], "--autoscale '3': give MIN,MAX"),
        (["--model", "NOT_ONNX"], "not"),
        (["--model", "MODEL", "--max-body-mb", "nan"], "--max-body-mb nan: must be a finite number above 0"),
        (["--model", "MODEL", "--max-body-mb", "inf"], "--max-body-mb inf: must be a finite number above 0"),
        (["--model", "MODEL", "--timeout-s", "nan"], "--timeout-s nan: must be a finite number above 0"),
        (["--model", "MODEL", "--max-wait-ms", "nan"], "--max-wait-ms nan: must be a finite number above 0 (or 0)"),
        (["--model", "MODEL", "--max-output-mpx", "-1"], "--max-output-mpx -1.0: must be a finite number above 0"),
        (["--model", "MODEL", "--header-timeout-s", "0"], "--header-timeout-s 0.0: must be a finite number above 0"),
        (["--model", "MODEL", "--port", "70000"], "--port 70000: must be between 1 and 65535"),
        (["--model", "MODEL", "--port", "0"], "--port 0: must be between 1 and 65535"),
        (["--model", "MODEL", "--port", "http"], "argument --port: invalid int value: 'http'"),
        (["--model", "MODEL", "--max-maps", "0"], "--max-maps 0: must be at least 1"),
        (["--model", "MODEL", "--max-requests", "0"], "--max-requests 0: must be at least 1"),
        (["--model", "MODEL", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(model_path, tmp_path, flags, message):
    not_onnx = tmp_path / "not.onnx"
    not_onnx.write_bytes(b"hello")
    flags = [str(model_path) if f == "MODEL" else str(not_onnx) if f == "NOT_ONNX" else f for f in flags]
    completed = subprocess.run([sys.executable, "-m", "runtime.serve", *flags], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxcam-serve: ") and message in lines[0], completed.stderr


def test_help_gives_a_default_or_a_word_for_every_option():
    completed = subprocess.run([sys.executable, "-m", "runtime.serve", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0
    options = completed.stdout.split("options:")[1]
    entries = [entry for entry in options.split("\n  -") if entry.strip()]
    assert len(entries) > 20
    for entry in entries:
        words = " ".join(entry.split())
        if not words.startswith("h, --help"):
            assert "default:" in words or "store_true" in words or len(words.split()) > 6, words
    for limit in ("--max-maps", "--max-output-mpx", "--max-requests", "--max-connections", "--header-timeout-s", "--body-timeout-s", "--allow-origin", "--quiet"):
        assert limit in options


def test_start_line_access_log_and_sigterm_lines(model_path, tmp_path):
    key = tmp_path / "key"
    key.write_text("k3y-never-logged")
    image = sample_images()[0]
    with server_process(model_path, "--api-key-file", str(key)) as (process, url):
        headers = {"X-API-Key": "k3y-never-logged"}
        assert httpx.post(f"{url}/v1/explain?top_k=2", content=image, headers=headers).status_code == 200
        assert httpx.post(f"{url}/v1/explain", content=b"junk", headers=headers).status_code == 422
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        lines = log(process).splitlines()
    start = lines[0]
    assert start.startswith("onnxcam-serve: fake (layer average_pool) on http://127.0.0.1:") and "16 maps" in start and "API key required" in start
    assert any(line.startswith("POST /v1/explain 200 ") and line.endswith(" ms 1 image(s)") for line in lines)
    assert any(line.startswith("POST /v1/explain 422 ") for line in lines)
    assert any(line.startswith("onnxcam-serve: SIGTERM: accepting no new requests") for line in lines), lines
    assert lines[-1] == "onnxcam-serve: stopped"
    assert not any("k3y" in line or "junk" in line or "top_k" in line for line in lines)


def test_quiet_has_no_access_log(model_path):
    with server_process(model_path, "--quiet") as (process, url):
        assert httpx.post(f"{url}/v1/explain", content=sample_images()[0]).status_code == 200
        text = log(process)
    assert "POST" not in text and "onnxcam-serve: fake" in text

"""A real server on 127.0.0.1 against issue 23's items 1-3: one request cannot take its memory,
slow and held clients cannot pile up, heavy work stops with its client and does not starve light
work. Bounded: a few dozen connections, each test under ~30 s."""

import asyncio
import signal
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from runtime.methods import METHODS
from tests.fake_model import write_fake_model
from tests.serve_helpers import memory_kib, png_bytes, post_head, raw_request, red_blob_png, server_process, write_slow_model

MIB = 1024


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_fake_model(tmp_path_factory.mktemp("serve_budget") / "fake.onnx")


@pytest.fixture(scope="module")
def slow_model_path(tmp_path_factory):
    return write_slow_model(tmp_path_factory.mktemp("serve_budget_slow") / "slow.onnx", convolutions=8)


def test_item_1_many_maps_of_a_large_image_are_refused_at_once_and_memory_stays_flat(model_path):
    big = png_bytes(np.zeros((2000, 2000, 3), np.uint8))  # 12 KB of PNG
    with server_process(model_path) as (process, url):
        base = memory_kib(process.pid)
        started = time.perf_counter()
        response = httpx.post(f"{url}/v1/explain", content=big, timeout=60,
                              params={"method": ",".join(METHODS), "explain_top": 4, "include": "overlay,heatmap"})
        assert response.status_code == 422 and response.json()["error"]["code"] == "too_many_maps", response.text
        assert time.perf_counter() - started < 5
        response = httpx.post(f"{url}/v1/explain?explain_top=4&include=overlay,heatmap", content=png_bytes(np.zeros((4000, 4000, 3), np.uint8)), timeout=60)
        assert response.status_code == 413 and "--max-output-mpx" in response.json()["error"]["message"]
        assert memory_kib(process.pid, "VmHWM") - base < 60 * MIB
        # the most the default budget lets through: 4 maps x 2 images x 4 Mpx = 32 Mpx, one map at a time
        response = httpx.post(f"{url}/v1/explain?explain_top=4&include=overlay,heatmap", content=big, timeout=120)
        assert response.status_code == 200 and len(response.json()["maps"]) == 4
        peak = memory_kib(process.pid, "VmHWM") - base
        after = memory_kib(process.pid) - base
    assert peak < 250 * MIB, peak  # all 8 images at once would be over 300 MiB
    assert after < 120 * MIB, after


def test_item_2_slow_headers_are_dropped_and_held_bodies_are_bounded(model_path):
    with server_process(model_path, "--header-timeout-s", "1", "--body-timeout-s", "2", "--max-requests", "4", "--max-body-mb", "10") as (process, url):
        address = urlparse(url)
        slow = [socket.create_connection((address.hostname, address.port), timeout=10) for _ in range(20)]
        for sock in slow:
            sock.sendall(b"POST /v1/explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        base = memory_kib(process.pid)

        async def hold() -> list[bytes]:  # 24 clients send 9 of a declared 10 MiB and wait
            return await asyncio.gather(*(raw_request(url, post_head("/v1/explain", 10 * 2**20), b"\0" * (9 * 2**20), wait_s=0.5) for _ in range(24)))

        replies = asyncio.run(hold())
        held = memory_kib(process.pid, "VmHWM") - base
        time.sleep(0.5)
        closed = 0
        for sock in slow:  # the header timeout has closed them: recv gives b"" at once
            try:
                closed += sock.recv(100) == b""
            except OSError:
                closed += 1
            sock.close()
    statuses = [reply.split(b" ", 2)[1] for reply in replies if reply.startswith(b"HTTP/1.1")]
    assert closed == 20
    assert statuses.count(b"503") >= 16 and set(statuses) <= {b"503", b"408"}, statuses
    assert held < 4 * 10 * MIB + 60 * MIB, held  # 24 x 9 MiB = 216 MiB if every body were read


def test_item_3_timed_out_work_stops_and_sigterm_is_prompt(slow_model_path):
    image = red_blob_png()
    with server_process(slow_model_path, "--timeout-s", "0.3", "--max-batch-size", "1") as (process, url):
        # each request is ~24 model runs of ~10 GFLOP: about 1 s on a quiet 2-core VM, so 0.3 s expires
        statuses = []

        def heavy() -> None:
            statuses.append(httpx.post(f"{url}/v1/explain?method=scorecam&aug_smooth=1", content=image, timeout=60).status_code)

        threads = [threading.Thread(target=heavy) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert statuses == [504] * 3
        for _ in range(30):  # the work stops at its next model run: within a run's time
            metrics = httpx.get(f"{url}/metrics").text
            if "onnxcam_runs_stopped 0.0" not in metrics:
                break
            time.sleep(0.1)
        started = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        stopping = time.perf_counter() - started
    assert "onnxcam_runs_stopped" in metrics and "onnxcam_runs_stopped 0.0" not in metrics
    assert stopping < 4, stopping  # the three requests' work (24 runs each) was stopped, not finished


@pytest.fixture(scope="module")
def slower_model_path(tmp_path_factory):
    """Three times the slow model's work: its Score-CAM request (~24 runs) takes seconds even on a
    quiet machine, so that a light request sent just after it finishes first only if it did not
    wait (with the slow model it once took under 0.5 s and finished first)."""
    return write_slow_model(tmp_path_factory.mktemp("serve_budget_slower") / "slower.onnx", convolutions=24)


def test_item_3_a_light_request_does_not_wait_behind_a_heavy_one(slower_model_path):
    image = red_blob_png()
    with server_process(slower_model_path, "--max-batch-size", "1") as (_, url):
        finished = {}

        def post(name: str, query: str) -> None:
            response = httpx.post(f"{url}/v1/explain{query}", content=image, timeout=120)
            finished[name] = (response.status_code, time.perf_counter())

        heavy = threading.Thread(target=post, args=("heavy", "?method=scorecam&aug_smooth=1"))
        heavy.start()
        time.sleep(0.2)  # the heavy request is in first
        post("light", "?method=gradcam")
        heavy.join(timeout=120)
    assert finished["heavy"][0] == finished["light"][0] == 200
    assert finished["light"][1] < finished["heavy"][1]  # in one queue it would have waited for the heavy one

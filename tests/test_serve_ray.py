"""Ray Serve on a local Ray started here: two replicas answer; a killed replica is replaced."""

import os
import signal
import threading
import time

import httpx
import pytest
import ray
from ray import serve

from runtime.serve.limits import Limits
from runtime.serve.ray_app import deployment
from tests.fake_model import write_fake_model
from tests.serve_helpers import free_port, red_blob_png

CLIENTS = 3


@pytest.fixture(scope="module")
def ray_url(tmp_path_factory):
    model = write_fake_model(tmp_path_factory.mktemp("serve_ray") / "fake.onnx")
    ray.init(address="local", num_cpus=2, object_store_memory=300_000_000, include_dashboard=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(deployment(str(model), "cpu", Limits(), replicas=2), name="onnxcam", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def replica_pids(url: str, tries: int = 60) -> set[int]:
    return {httpx.get(f"{url}/healthz", timeout=30).json()["pid"] for _ in range(tries)}


def test_two_replicas_answer_and_a_killed_one_is_replaced(ray_url):
    before = replica_pids(ray_url)
    assert len(before) == 2
    image = red_blob_png()
    response = httpx.post(f"{ray_url}/v1/explain?top_k=2", content=image, timeout=30)
    assert response.status_code == 200 and response.json()["predictions"][0]["label"] == "red"
    assert httpx.post(f"{ray_url}/v1/explain?class=9", content=image, timeout=30).json()["error"]["code"] == "class_out_of_range"

    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=ray_url, timeout=60) as session:
            while not stop.is_set():
                try:
                    statuses.append(session.post("/v1/explain", content=image).status_code)
                except httpx.TransportError:
                    statuses.append(-1)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    after: set[int] = set()
    while time.monotonic() < deadline:
        after = replica_pids(ray_url, 20)
        if len(after) == 2 and victim not in after:
            break
        time.sleep(1)
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert len(after) == 2 and victim not in after, after
    lost = [status for status in statuses if status != 200]
    assert len(lost) <= CLIENTS, lost  # at most the requests in flight on the killed replica
    assert statuses.count(200) > 20

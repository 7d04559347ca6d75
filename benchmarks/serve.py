"""The HTTP server against Explainer.explain in-process, same machine, same run: a markdown table.

python -m benchmarks.serve [--model M.onnx] [--requests 400]
Without --model it times the tiny test model (tests/fake_model.py). Targets (issue 12): throughput at
32 clients >= 0.9x in-process batch-8 throughput; p50 at 1 client <= in-process p50 + 10%.
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from runtime import Explainer
from tests.serve_helpers import png_bytes, server_process

CONCURRENCY = (1, 8, 32, 200)


def row(name: str, seconds: list[float], images: int, wall: float) -> str:
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return f"| {name} | {p50:.1f} | {p99:.1f} | {images / wall:.1f} |"


def in_process(explainer: Explainer, image: bytes, requests: int) -> list[str]:
    explainer.explain(image)
    single = []
    started = time.perf_counter()
    for _ in range(requests // 4):
        begin = time.perf_counter()
        explainer.explain(image)
        single.append(time.perf_counter() - begin)
    rows = [row("in-process explain, 1 image", single, len(single), time.perf_counter() - started)]
    batches = []
    started = time.perf_counter()
    for _ in range(max(2, requests // 32)):
        begin = time.perf_counter()
        explainer.explain([image] * 8)
        batches.append(time.perf_counter() - begin)
    rows.append(row("in-process explain, batch of 8", batches, 8 * len(batches), time.perf_counter() - started))
    return rows


async def http_clients(url: str, image: bytes, clients: int, requests: int) -> str:
    each = max(1, requests // clients)
    seconds: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        await client.post("/v1/explain", content=image)

        async def worker() -> None:
            for _ in range(each):
                begin = time.perf_counter()
                response = await client.post("/v1/explain", content=image)
                response.raise_for_status()
                seconds.append(time.perf_counter() - begin)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
    return row(f"HTTP, {clients} client{'s' if clients > 1 else ''}", seconds, len(seconds), wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an onnxcam model (default: the tiny test model)")
    parser.add_argument("--requests", type=int, default=400, help="HTTP requests per concurrency level")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            from tests.fake_model import write_fake_model

            model = write_fake_model(Path(folder) / "fake.onnx")
        rng = np.random.default_rng(0)
        image = png_bytes(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
        lines = [f"model: {model}", "", "| run | p50 ms | p99 ms | images/s |", "|---|---:|---:|---:|"]
        lines += in_process(Explainer(model, device="cpu"), image, args.requests)
        with server_process(model, "--max-queue", "1024", "--timeout-s", "300") as (_, url):
            for clients in CONCURRENCY:
                lines.append(asyncio.run(http_clients(url, image, clients, args.requests)))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

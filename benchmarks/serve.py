"""The HTTP server: against Explainer.explain in-process, under abuse, and per CAM method.

python -m benchmarks.serve [--model M.onnx] [--requests 400] [--abuse-s 20]
Without --model it times the tiny test model (tests/fake_model.py). Prints three markdown tables:
1. throughput and latency by concurrency, against the in-process Explainer (issue 12's targets:
   32 clients >= 0.9x in-process batch-8 throughput; 1 client p50 <= in-process p50 + 10%);
2. 8 well-behaved clients alone, then beside --abuse-s seconds of issue 23's mixed abuse, on a
   server with the default limits: their p50/p99, the server's peak RSS (VmHWM) against the bound
   in docs/serve.md, and how long SIGTERM took; then the worst case of the default limits' memory;
3. one request alone per CAM method (Score-CAM's cost).
"""

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from runtime import Explainer
from runtime.methods import METHODS
from runtime.serve.limits import Limits
from tests.serve_helpers import abuse_process, held_body, memory_kib, png_bytes, red_blob_png, server_process, timed_clients

CONCURRENCY = (1, 8, 32, 200)
WELL_BEHAVED = 8
RSS_BOUND_MIB = 1536  # docs/serve.md


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


def throughput_table(model: Path, requests: int) -> list[str]:
    image = png_bytes(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    lines = ["| run | p50 ms | p99 ms | images/s |", "|---|---:|---:|---:|"]
    lines += in_process(Explainer(model, device="cpu"), image, requests)
    flags = ("--max-queue", "1024", "--timeout-s", "300", "--max-requests", "256", "--quiet")
    with server_process(model, *flags) as (_, url):
        for clients in CONCURRENCY:
            lines.append(asyncio.run(http_clients(url, image, clients, requests)))
    return lines


def abuse_table(model: Path, abuse_s: float) -> list[str]:
    """Well-behaved clients alone, then under abuse; peak RSS; SIGTERM time. Default limits but --timeout-s 10."""
    image = red_blob_png(64, 64)
    with server_process(model, "--timeout-s", "10", "--quiet") as (process, url):
        alone, alone_statuses = asyncio.run(timed_clients(url, image, WELL_BEHAVED, 5))
        with abuse_process(url, abuse_s + 1) as abusive_statuses:
            loaded, statuses = asyncio.run(timed_clients(url, image, WELL_BEHAVED, abuse_s))
            abusive_statuses()
        peak_mib = memory_kib(process.pid, "VmHWM") / 1024
        started = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        stopping = time.perf_counter() - started
    ok = lambda codes: f"{codes.count(200)}/{len(codes)}"  # noqa: E731
    (a50, a99), (l50, l99) = (np.percentile(np.asarray(s) * 1000, [50, 99]) for s in (alone, loaded))
    return [
        f"| {WELL_BEHAVED} well-behaved clients | requests 200 | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| alone, 5 s | {ok(alone_statuses)} | {a50:.1f} | {a99:.1f} |",
        f"| beside {abuse_s:g} s of abuse | {ok(statuses)} | {l50:.1f} | {l99:.1f} |",
        "",
        f"p99 under abuse / alone: {l99 / a99:.2f} (target < 3); server peak RSS (VmHWM): {peak_mib:.0f} MiB "
        f"(bound {RSS_BOUND_MIB} MiB); SIGTERM: exit {code} after {stopping:.1f} s (--timeout-s 10)",
    ]


async def fill(url: str, held: int) -> int:
    """`held` clients each holding 19.9 of a declared 20 MiB body, and beside them the largest
    request the default budget lets through (16 Mpx, 4 maps, their overlays: 64 Mpx back)."""
    big = png_bytes(np.zeros((4000, 4000, 3), np.uint8))
    stop = asyncio.Event()
    holders = [asyncio.ensure_future(held_body(url, stop, 20 * 2**20, int(19.9 * 2**20))) for _ in range(held)]
    await asyncio.sleep(3)
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        response = await client.post("/v1/explain?explain_top=4&include=overlay", content=big)
    stop.set()
    await asyncio.gather(*holders)
    return response.status_code


def worst_case_line(model: Path) -> str:
    """Peak RSS with every in-flight slot but one holding a full body, and the largest request."""
    limits = Limits()
    with server_process(model, "--quiet") as (process, url):
        base = memory_kib(process.pid) / 1024
        status = asyncio.run(fill(url, limits.max_requests - 1))
        peak = memory_kib(process.pid, "VmHWM") / 1024
    return (
        f"worst case, default limits: {limits.max_requests - 1} bodies of 19.9 MiB held and one 16 Mpx request with "
        f"4 overlays back (status {status}): peak RSS {peak:.0f} MiB, {base:.0f} MiB at rest (bound {RSS_BOUND_MIB} MiB)"
    )


def methods_table(model: Path) -> list[str]:
    """One 224 x 224 request alone per method, the median of three."""
    image = png_bytes(np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    lines = ["| method | one request, ms (median of 3) |", "|---|---:|"]
    with server_process(model, "--timeout-s", "600", "--quiet") as (_, url):
        for method in METHODS:
            seconds = []
            for _ in range(3):
                begin = time.perf_counter()
                httpx.post(f"{url}/v1/explain", params={"method": method}, content=image, timeout=600).raise_for_status()
                seconds.append(time.perf_counter() - begin)
            lines.append(f"| {method} | {np.median(seconds) * 1000:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an onnxcam model (default: the tiny test model)")
    parser.add_argument("--requests", type=int, default=400, help="HTTP requests per concurrency level")
    parser.add_argument("--abuse-s", type=float, default=20.0, help="seconds of abuse")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            from tests.fake_model import write_fake_model

            model = write_fake_model(Path(folder) / "fake.onnx")
        lines = [f"model: {model}", ""]
        lines += throughput_table(model, args.requests) + [""]
        lines += abuse_table(model, args.abuse_s) + [worst_case_line(model), ""]
        lines += methods_table(model)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

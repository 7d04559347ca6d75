"""`python -m benchmarks.batch`: python -m runtime.batch (Ray Data) against the plain CLI on the same
images, in one run on this machine; prints a Markdown table and exits 0.

    python -m benchmarks.batch [--model models/resnet50_gradcam.onnx] [--images 64] [--batch-size 8]

Per command: wall time, throughput, and the peak of the summed RSS of the whole process tree
(Ray's raylet, GCS and workers included), sampled every 50 ms. The batch job's own throughput
(its last line: images / the job's time after Ray is up) and Ray's start-up time (its stderr
line) are reported beside the end-to-end figures."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
from time import perf_counter

import cv2

from benchmarks.images import photos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_SECONDS = 0.05


def tree_rss_mb(root: int) -> float:
    """Summed VmRSS of `root` and all its descendants, in MiB."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                parents[int(entry)] = int(file.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status") as file:
                rss[int(entry)] = next((int(line.split()[1]) for line in file if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
    total, frontier = 0, {root}
    while frontier:
        total += sum(rss.get(pid, 0) for pid in frontier)
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
    return total / 1024


def measured(command: list[str]) -> tuple[float, float, str, str]:
    """Run `command`: (seconds, peak tree RSS MiB, stdout, stderr). Raises if it fails to start."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        begin = perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        peak = 0.0
        while child.poll() is None:
            peak = max(peak, tree_rss_mb(child.pid))
            threading.Event().wait(POLL_SECONDS)
        seconds = perf_counter() - begin
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command[:4])}: exit {child.returncode}: {stderr.strip()[-300:]}")
    return seconds, peak, stdout, stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "models", "resnet50_gradcam.onnx"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="actor pool sizes to run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        folder = os.path.join(work, "images")
        os.makedirs(folder)
        for index, photo in enumerate(photos(args.images)):
            cv2.imwrite(os.path.join(folder, f"cat{index:04d}.jpg"), photo[:, :, ::-1])
        common = ["--model", args.model, "--batch-size", str(args.batch_size), "--device", "cpu"]
        cli_seconds, cli_peak, _, _ = measured(
            [sys.executable, "-m", "runtime", folder, *common, "--out", os.path.join(work, "cli")])
        cli_rate = args.images / cli_seconds
        rows = [f"| plain CLI (`python -m runtime`), 1 process | {cli_seconds:.1f} | {cli_rate:.2f} | 1.00 | – | – | {cli_peak:.0f} |"]
        for workers in args.workers:
            seconds, peak, stdout, stderr = measured(
                [sys.executable, "-m", "runtime.batch", folder, *common, "--workers", str(workers),
                 "--output", os.path.join(work, f"batch{workers}")])
            job_rate = float(re.search(r", ([\d.]+) img/s, ", stdout.strip().splitlines()[-1]).group(1))
            ray_start = float(re.search(r"Ray ready in ([\d.]+) s", stderr).group(1))
            rows.append(
                f"| `python -m runtime.batch`, {workers} actor{'s' if workers > 1 else ''} | {seconds:.1f} | "
                f"{args.images / seconds:.2f} | {args.images / seconds / cli_rate:.2f} | {job_rate:.2f} "
                f"({job_rate / cli_rate:.2f}×) | {ray_start:.1f} | {peak:.0f} |")
    print(f"{args.images} JPEG photos ({os.path.basename(args.model)}), batch {args.batch_size}, CPU, "
          f"{os.cpu_count()} cores\n")
    print("| command | wall s | img/s end to end | × CLI | img/s of the job after Ray is up (× CLI) "
          "| Ray start s | peak RSS of the process tree MiB |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

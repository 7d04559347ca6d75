"""Repeated timing with perf_counter: warm-up, interleaved rounds, median / p90 per image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from time import perf_counter, sleep
from typing import Any

import numpy as np

# onnxruntime's worker threads spin for a while after a run; on 2 cores the next run of another
# session then loses ~30% (measured). A pause before each timed call lets them go idle first.
PAUSE_SECONDS = 0.1


@dataclass(frozen=True)
class Budget:
    """How long to time one batch size: rounds of every variant, after warm-up calls."""

    warmup: int
    min_rounds: int
    min_seconds: float  # all variants of the batch together
    max_rounds: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


FULL = Budget(warmup=2, min_rounds=10, min_seconds=30.0, max_rounds=300)
QUICK = Budget(warmup=1, min_rounds=5, min_seconds=6.0, max_rounds=100)


def interleaved(calls: dict[str, Callable[[], object]], budget: Budget) -> dict[str, list[float]]:
    """Seconds per call of each variant. Variants alternate (the order rotates each round), so a
    change in the machine's load hits all of them alike and their ratios stay fair; each timed
    call follows an untimed PAUSE_SECONDS."""
    for _ in range(budget.warmup):
        for call in calls.values():
            call()
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    started = perf_counter()
    rounds = 0
    while rounds < budget.max_rounds and (
        rounds < budget.min_rounds or perf_counter() - started < budget.min_seconds
    ):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            sleep(PAUSE_SECONDS)
            begin = perf_counter()
            calls[name]()
            times[name].append(perf_counter() - begin)
        rounds += 1
    return times


def summary(call_seconds: list[float], batch: int) -> dict[str, Any]:
    """Per-image latency (median, p90) in ms, and throughput = images / total time."""
    per_image = np.asarray(call_seconds) / batch
    return {
        "median_ms": float(np.median(per_image)) * 1e3,
        "p90_ms": float(np.percentile(per_image, 90)) * 1e3,
        "images_per_s": batch * len(call_seconds) / float(np.sum(call_seconds)),
        "calls": len(call_seconds),
        "call_seconds": [round(t, 6) for t in call_seconds],
    }

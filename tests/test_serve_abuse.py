"""Issue 23's adversarial test: a real server with its default limits, 20 s of mixed abuse (slow
headers, held bodies, clients that vanish, the requests of items 1 and 3, bad multipart) beside 8
well-behaved clients. Bounded: 22 abusive connections at a time, ~40 s in all."""

import asyncio
import re
import signal
import time

import numpy as np

from runtime.serve.limits import Limits
from tests.serve_helpers import abuse_process, log, memory_kib, red_blob_png, server_process, timed_clients

CLIENTS = 8
UNLOADED_S = 5
ABUSE_S = 20
TIMEOUT_S = 10  # --timeout-s: the most SIGTERM may take
STARVED_S = 1.0  # a well-behaved request slower than this waited behind heavy work
RSS_BOUND_MIB = 1536  # docs/serve.md: the bound measured under this abuse with the default limits


def test_well_behaved_clients_are_served_through_20_s_of_abuse(model_path):
    image = red_blob_png(64, 64)
    with server_process(model_path, "--timeout-s", str(TIMEOUT_S)) as (process, url):
        unloaded, unloaded_statuses = asyncio.run(timed_clients(url, image, CLIENTS, UNLOADED_S))
        with abuse_process(url, ABUSE_S + 1) as abusive_statuses:
            loaded, statuses = asyncio.run(timed_clients(url, image, CLIENTS, ABUSE_S))
            abusive = abusive_statuses()
        peak_mib = memory_kib(process.pid, "VmHWM") / 1024
        started = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=TIMEOUT_S + 20)
        stopping = time.perf_counter() - started
        text = log(process)
    assert set(unloaded_statuses) == {200} and set(statuses) == {200}, sorted(set(statuses))
    assert len(loaded) > 4 * CLIENTS
    unloaded_p99, loaded_p99 = np.percentile(unloaded, 99), np.percentile(loaded, 99)
    # Not starved: before the lanes, a light request waited 27.6 s behind a heavy one. The 3x-p99
    # target moves with the machine's load, so it is measured by python -m benchmarks.serve, not here.
    assert loaded_p99 < max(10 * unloaded_p99, STARVED_S), (unloaded_p99, loaded_p99)
    assert peak_mib < RSS_BOUND_MIB, peak_mib
    assert exit_code == 0 and stopping < TIMEOUT_S + 2, (exit_code, stopping)
    assert {200, 400, 422} <= set(abusive) and 500 not in abusive, sorted(set(abusive))
    statuses_logged = re.findall(r"^[A-Z]+ \S* (\d{3}) \d+ ms ", text, re.M)  # the access log: METHOD PATH STATUS MS ms
    assert statuses_logged and "500" not in statuses_logged and "Traceback" not in text
    assert Limits().max_requests * Limits().max_body_mb < RSS_BOUND_MIB

"""Child processes measured from outside (wall time, peak RSS) and a process's own peak RSS.

Peak RSS is the kernel's VmHWM (/proc/PID/status): the high-water mark of that process image.
`ru_maxrss` of a child is no use here: Linux carries the parent's high-water mark over the
child's fork/exec, so a child smaller than its parent reports the parent's size.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from dataclasses import dataclass
from time import perf_counter

POLL_SECONDS = 0.01


@dataclass(frozen=True)
class Finished:
    """How a child process ended."""

    returncode: int
    seconds: float  # perf_counter from before the start to after the exit
    peak_rss_mb: float  # the child's VmHWM, last read at most POLL_SECONDS before its exit
    stdout: str
    stderr: str

    def last_error_line(self) -> str:
        lines = [line for line in (self.stderr + "\n" + self.stdout).splitlines() if line.strip()]
        return lines[-1].strip()[:300] if lines else f"exit code {self.returncode}"


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM of a running process in MiB (0 when it cannot be read, e.g. it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measured(command: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Finished:
    """Run `command` to its end; a thread polls its peak RSS while this one waits for the exit.
    Output goes to temporary files (no pipe can fill up)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        begin = perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        peak = [0.0]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], peak_rss_mb(child.pid))
                done.wait(POLL_SECONDS)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        child.wait()
        seconds = perf_counter() - begin
        done.set()
        watcher.join()
        out.seek(0)
        err.seek(0)
        return Finished(child.returncode, seconds, peak[0], out.read(), err.read())

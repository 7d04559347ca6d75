"""Micro-batching: concurrent requests gathered into one Explainer run, off the event loop, in
lanes; work whose requests are all gone (timed out, disconnected, shut down) stops at the next
model run, Score-CAM's masked runs included."""

import asyncio
import copy
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..explainer import Explainer
from ..results import Outcome
from ..targets import Targets


@dataclass(frozen=True)
class Settings:
    """What one request asks for; requests with equal settings share a model run."""

    targets: Targets
    aug_smooth: bool
    eigen_smooth: bool


class QueueFull(Exception):
    """The lane's queue holds --max-queue requests already."""


class Stopped(BaseException):
    """Raised inside a model run whose requests are all gone. A BaseException, like
    asyncio.CancelledError, so that the Explainer's per-image error handling lets it through."""


@dataclass
class Job:
    """One request's image (encoded: decoded in the worker), settings and answer. `gone` is set by
    the request's handler when nobody waits for the answer any more."""

    image: bytes
    settings: Settings
    done: asyncio.Future
    gone: threading.Event = field(default_factory=threading.Event)


class StoppableSession:
    """An onnxruntime session that raises Stopped before a run when `stop()` says so."""

    def __init__(self, session: Any, stop: Callable[[], bool]) -> None:
        self._session, self._stop = session, stop

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if self._stop():
            raise Stopped()
        return self._session.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def variant(explainer: Explainer, aug_smooth: bool, eigen_smooth: bool) -> Explainer:
    """The same session with these smoothing settings (Explainer keeps no per-call state)."""
    if (explainer.aug_smooth, explainer.eigen_smooth) == (aug_smooth, eigen_smooth):
        return explainer
    return explainer.with_options(aug_smooth, eigen_smooth)


def stoppable(explainer: Explainer, stop: Callable[[], bool]) -> Explainer:
    """The same Explainer whose model runs raise Stopped once `stop()` is true.
    (The runtime core has no cancellation hook: this wraps its session.)"""
    other = copy.copy(explainer)
    other._session = StoppableSession(explainer._session, stop)
    return other


def run_group(explainer: Explainer, jobs: list[Job]) -> list[tuple[Outcome, ...]] | None:
    """One explain_methods call for jobs that share settings: per image, one Outcome per method;
    None if every job was gone before the work was done."""
    settings = jobs[0].settings

    def all_gone() -> bool:
        return all(job.gone.is_set() for job in jobs)

    chosen = stoppable(variant(explainer, settings.aug_smooth, settings.eigen_smooth), all_gone)
    try:
        outcomes = []
        for outcome in chosen.explain_targets([job.image for job in jobs], settings.targets):
            if all_gone():
                return None
            outcomes.append(outcome)
        return outcomes
    except Stopped:
        return None


HEAVY_NICENESS = 10  # the heavy lane's and render thread's niceness, above the light lane's 0


def lower_priority() -> None:
    """Make the calling thread yield the CPU to the server's other threads (Linux: niceness is
    per thread). Where that is not possible, nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEAVY_NICENESS)
    except (AttributeError, OSError):
        pass


class Batcher:
    """One lane: gathers up to max_batch_size jobs (or what arrives within max_wait_s of the
    first) and runs them on its own worker thread; each job's future gets its own outcomes or
    exception. Jobs gone before their turn are skipped."""

    def __init__(
        self,
        explainer: Explainer,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] = lambda size: None,
        name: str = "light",
    ) -> None:
        self.explainer = explainer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.name = name
        self.stopped_runs = 0  # groups whose work stopped because every request was gone
        self._queue: asyncio.Queue[Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"onnxcam-{name}", initializer=lower_priority if name == "heavy" else None
        )

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def _start(self) -> asyncio.Queue:
        """The queue of the running event loop, its worker started on first use (again on a new loop)."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.get_loop() is not loop or self._worker.done():
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._worker = loop.create_task(self._loop(self._queue))
        return self._queue

    def submit(self, image: bytes, settings: Settings) -> Job:
        """Queue one encoded image; the job's future resolves to its tuple of Outcomes. QueueFull if full."""
        queue = self._start()
        job = Job(image, settings, asyncio.get_running_loop().create_future())
        try:
            queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"the {self.name} queue holds {self.max_queue} requests") from None
        return job

    async def _loop(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(jobs) < self.max_batch_size:
                remaining = deadline - loop.time()
                try:
                    jobs.append(queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining))
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
            live = [job for job in jobs if not job.gone.is_set()]
            if live:
                self.on_batch(len(live))
                await self._run(live)

    async def _run(self, jobs: list[Job]) -> None:
        groups: dict[Settings, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.settings, []).append(job)
        loop = asyncio.get_running_loop()
        for group in groups.values():
            group = [job for job in group if not job.gone.is_set()]
            if not group:
                continue
            try:
                results = await loop.run_in_executor(self._executor, run_group, self.explainer, group)
            except Exception as error:  # UsageError -> 422 for these jobs; anything else is a 500
                results = [error] * len(group)
            if results is None:
                self.stopped_runs += 1
                continue
            for job, result in zip(group, results):
                if job.done.done():
                    continue
                if isinstance(result, Exception):
                    job.done.set_exception(result)
                else:
                    job.done.set_result(result)


class Lanes:
    """A light and a heavy Batcher, each with its own worker thread: Score-CAM, aug_smooth and
    large images never delay the small requests queued behind them."""

    def __init__(self, explainer: Explainer, max_batch_size: int, max_wait_s: float, max_queue: int, on_batch: Callable[[int], None]) -> None:
        self.light = Batcher(explainer, max_batch_size, max_wait_s, max_queue, on_batch, "light")
        self.heavy = Batcher(explainer, max_batch_size, max_wait_s, max_queue, on_batch, "heavy")

    @property
    def depth(self) -> int:
        return self.light.depth + self.heavy.depth

    @property
    def stopped_runs(self) -> int:
        return self.light.stopped_runs + self.heavy.stopped_runs

    def submit(self, image: bytes, settings: Settings, heavy: bool) -> Job:
        return (self.heavy if heavy else self.light).submit(image, settings)

"""Micro-batching: concurrent requests gathered into one Explainer run, off the event loop."""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..explainer import Explainer
from ..results import Outcome


@dataclass(frozen=True)
class Settings:
    """What one request asks for; requests with equal settings share a model run."""

    methods: tuple[str, ...]
    top_k: int
    explain_top: int
    classes: tuple[int, ...] | None
    aug_smooth: bool
    eigen_smooth: bool


class QueueFull(Exception):
    """The batch queue holds --max-queue requests already."""


@dataclass
class _Job:
    image: np.ndarray
    settings: Settings
    done: asyncio.Future


def variant(explainer: Explainer, aug_smooth: bool, eigen_smooth: bool) -> Explainer:
    """The same session with these smoothing settings (Explainer keeps no per-call state)."""
    if (explainer.aug_smooth, explainer.eigen_smooth) == (aug_smooth, eigen_smooth):
        return explainer
    return explainer.with_options(aug_smooth, eigen_smooth)


def run_group(explainer: Explainer, images: list[np.ndarray], settings: Settings) -> list[tuple[Outcome, ...]]:
    """One explain_methods call for images that share settings: per image, one Outcome per method."""
    chosen = variant(explainer, settings.aug_smooth, settings.eigen_smooth)
    classes = list(settings.classes) if settings.classes is not None else None
    return list(chosen.explain_methods(images, settings.methods, settings.top_k, classes, settings.explain_top))


class Batcher:
    """Gathers up to max_batch_size jobs (or what arrives within max_wait_s of the first) and runs
    them on one worker thread; each job's future gets its own outcomes or exception."""

    def __init__(
        self,
        explainer: Explainer,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.explainer = explainer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxcam-batch")

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

    def submit(self, image: np.ndarray, settings: Settings) -> asyncio.Future:
        """Queue one image; the future resolves to its tuple of Outcomes. QueueFull if full."""
        queue = self._start()
        job = _Job(image, settings, asyncio.get_running_loop().create_future())
        try:
            queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"the queue holds {self.max_queue} requests") from None
        return job.done

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
            live = [job for job in jobs if not job.done.done()]  # timed out while waiting: skip
            if live:
                self.on_batch(len(live))
                await self._run(live)

    async def _run(self, jobs: list[_Job]) -> None:
        groups: dict[Settings, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.settings, []).append(job)
        loop = asyncio.get_running_loop()
        for settings, group in groups.items():
            images = [job.image for job in group]
            try:
                results = await loop.run_in_executor(self._executor, run_group, self.explainer, images, settings)
            except Exception as error:  # UsageError -> 422 for these jobs; anything else is a 500
                results = [error] * len(group)
            for job, result in zip(group, results):
                if job.done.done():
                    continue
                if isinstance(result, Exception):
                    job.done.set_exception(result)
                else:
                    job.done.set_result(result)

    async def close(self) -> None:
        """Stop the worker (after the server has drained) and the thread."""
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=True)

"""Micro-batching: concurrent requests share one forward pass.

Requests put their decoded photos on a queue; one worker task takes the first waiting
request, collects more for up to ``window`` seconds or until ``max_images`` photos, runs
:meth:`Recognizer.recognize` once in the batcher's own thread (so the event loop keeps accepting
connections) and hands each request its answers.  When a shared forward pass fails, each
of its requests runs alone, so one request's failure reaches its own answer only.  Only
this worker calls the model, so forward passes never overlap; ``lock`` is also held by
enrolment while it changes the index.

One thread for every forward pass (not a thread of the shared pool) keeps the activations in
one glibc malloc arena: memory a forward pass freed is reused by the next instead of each pool
thread growing an arena of its own (:mod:`landmark.memory`).
"""
from __future__ import annotations

import asyncio
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from ..inference.recognizer import Answer, Recognizer
from .settings import MAX_BATCH_WINDOW_MS


@dataclass
class _Job:
    photos: list[Image.Image]
    sources: list[str]
    top_k: int
    future: asyncio.Future


@dataclass
class Batcher:
    """Collects jobs for up to ``window`` seconds / ``max_images`` photos per forward pass.

    The worker task starts on the first :meth:`recognize` (in the running event loop) and
    stops with :meth:`close`.  ``batches`` counts forward passes (for tests and /health).

    Raises:
        ValueError: ``window`` not a number of seconds in [0, MAX_BATCH_WINDOW_MS / 1000]
            (:mod:`landmark.serving.settings`), ``max_images`` below 1.
    """

    recognizer: Recognizer
    window: float = 0.010
    max_images: int = 16
    lock: threading.Lock = field(default_factory=threading.Lock)
    batches: int = 0
    _queue: asyncio.Queue | None = field(default=None, init=False, repr=False)
    _task: asyncio.Task | None = field(default=None, init=False, repr=False)
    _thread: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        longest = MAX_BATCH_WINDOW_MS / 1000
        if not (isinstance(self.window, (int, float)) and math.isfinite(self.window) and 0 <= self.window <= longest):
            raise ValueError(f"batching window {self.window} s: give 0 to {longest:g} s (every request waits "
                             f"up to this long)")
        if self.max_images < 1:
            raise ValueError(f"max_images {self.max_images}: give at least 1")

    async def recognize(self, photos: list[Image.Image], sources: list[str], top_k: int) -> list[Answer]:
        """Answers for ``photos`` (decoded), computed together with other waiting requests."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._work())
        job = _Job(photos, sources, top_k, loop.create_future())
        await self._queue.put(job)
        return await job.future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            deadline = loop.time() + self.window
            while sum(len(j.photos) for j in jobs) < self.max_images:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            await self._run(jobs)

    async def _run(self, jobs: list[_Job]) -> None:
        photos = [p for j in jobs for p in j.photos]
        sources = [s for j in jobs for s in j.sources]
        top_k = max(j.top_k for j in jobs)
        try:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="landmark-forward")
            answers = await asyncio.get_running_loop().run_in_executor(self._thread, self._forward, photos,
                                                                       sources, top_k)
        except Exception as err:  # noqa: BLE001 -- the worker lives on
            if len(jobs) == 1:
                if not jobs[0].future.done():
                    jobs[0].future.set_exception(err)
                return
            for j in jobs:   # one request's failure must not reach the others' answers: each alone
                await self._run([j])
            return
        self.batches += 1
        start = 0
        for j in jobs:
            mine = answers[start:start + len(j.photos)]
            start += len(j.photos)
            for a in mine:
                a.top_k, a.neighbours = a.top_k[:j.top_k], a.neighbours[:j.top_k]
            if not j.future.done():
                j.future.set_result(mine)

    def _forward(self, photos, sources, top_k) -> list[Answer]:
        with self.lock:
            return self.recognizer.recognize(photos, top_k=top_k, sources=sources, batch_size=self.max_images)

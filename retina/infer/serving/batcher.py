"""Dynamic batching: images from many clients, ``max_batch`` per network call.

Requests wait in one queue. An inference thread takes the first, then waits at most
``timeout`` seconds for more, up to ``max_batch`` images, and runs them as one batch (the
semantics of LitServe's ``max_batch_size`` / ``batch_timeout``); while it runs, new requests
queue up and make the next batch without waiting. A request with ``tile`` (a large image,
predicted window by window) runs alone, its windows batched ``max_batch`` at a time.

One failing image does not fail the others of its batch: after an error the batch is run
again one image at a time, and only the image that fails gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

log = logging.getLogger(__name__)

Detection = dict[str, Tensor]
PredictBatch = Callable[[list[Tensor]], list[Detection]]  # uint8 images -> detections
PredictLarge = Callable[[Tensor, int, int], Detection]  # scene, tile, windows per call


@dataclass
class Job:
    image: Tensor  # (3, H, W) uint8
    tile: int | None
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Batcher:
    """Runs the predictor for concurrent requests, batched.

    Args:
        predict: images -> detections (a ``retina.load`` predictor).
        predict_large: (image, tile, batch) -> detections of a large image (its
            ``predict_large``).
        max_batch: images per network call.
        timeout: seconds the first image of a batch waits for others.
        workers: inference threads (each runs its own batches; the model is shared).
    """

    def __init__(self, predict: PredictBatch, predict_large: PredictLarge, max_batch: int = 8,
                 timeout: float = 0.01, workers: int = 1) -> None:
        self.predict = predict
        self.predict_large = predict_large
        self.max_batch = max_batch
        self.timeout = timeout
        self.workers = workers
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.in_flight = 0  # submitted and not answered
        self.calls = 0  # batches run (a tiled image counts once)
        self.images = 0  # images in them

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._run, name=f"retina-infer-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Finish every queued job, then stop the threads."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    async def submit(self, image: Tensor, tile: int | None = None) -> Detection:
        """Detections of one image, in its pixels (``tile``: window by window)."""
        if not self._threads:
            raise RuntimeError("the batcher is not running (call start())")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self.in_flight += 1
        try:
            self._queue.put(Job(image, tile, future, loop))
            return await future
        finally:
            with self._lock:
                self.in_flight -= 1

    # ------------------------------------------------------------ the inference threads

    def _run(self) -> None:
        stop = False
        while not stop:
            job = self._queue.get()
            if job is None:
                return
            if job.tile is not None:
                self._answer([job], lambda: [self.predict_large(job.image, job.tile,
                                                                 self.max_batch)])
                continue
            batch, later, stop = self._gather(job)
            self._answer(batch, lambda: self.predict([j.image for j in batch]))
            for other in later:  # a tiled job met while gathering
                self._answer([other], lambda: [self.predict_large(other.image, other.tile,
                                                                   self.max_batch)])

    def _gather(self, first: Job) -> tuple[list[Job], list[Job], bool]:
        """``first`` and the jobs that come within ``timeout`` (up to ``max_batch``); the
        tiled jobs met on the way; whether the stop sentinel was met."""
        batch, later = [first], []
        deadline = time.monotonic() + self.timeout
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, later, True
            (later if job.tile is not None else batch).append(job)
        return batch, later, False

    def _answer(self, jobs: list[Job], run: Callable[[], list[Detection]]) -> None:
        """Run ``run`` for ``jobs`` and hand each its result; after an error, one by one."""
        try:
            results = run()
        except Exception as err:  # noqa: BLE001  any failure goes back to its request
            if len(jobs) > 1:
                for job in jobs:
                    self._answer([job], lambda job=job: self.predict([job.image]))
                return
            log.exception("prediction failed")
            self._deliver(jobs[0], error=err)
            return
        with self._lock:
            self.calls += 1
            self.images += len(jobs)
        for job, result in zip(jobs, results):
            self._deliver(job, result=result)

    @staticmethod
    def _deliver(job: Job, result: Detection | None = None,
                 error: Exception | None = None) -> None:
        def settle() -> None:
            if job.future.done():  # the client went away
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop is closed: nobody waits for it
            pass

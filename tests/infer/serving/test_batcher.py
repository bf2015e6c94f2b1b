"""retina.infer.serving.batcher: concurrent requests share network calls, up to max_batch; a
failing image fails alone; closing answers what is queued."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from retina.infer.serving.batcher import Batcher


def image(value: int) -> torch.Tensor:
    return torch.full((3, 4, 4), value, dtype=torch.uint8)


class Recorder:
    """Detections that echo each image's value; ``gate`` holds the first call until set."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.large: list[tuple[int, int, int]] = []
        self.fail_on = fail_on
        self.gate = threading.Event()
        self.gate.set()

    def predict(self, images):
        self.gate.wait(10)
        values = [int(im[0, 0, 0]) for im in images]
        self.batches.append(values)
        if self.fail_on in values:
            raise RuntimeError(f"cannot predict image {self.fail_on}")
        return [{"scores": torch.tensor([float(v)])} for v in values]

    def predict_large(self, im, tile, batch):
        self.large.append((int(im[0, 0, 0]), tile, batch))
        return {"scores": torch.tensor([-1.0])}


async def submit_all(batcher: Batcher, values, tile=None):
    return await asyncio.gather(*(batcher.submit(image(v), tile) for v in values),
                                return_exceptions=True)


def run(batcher: Batcher, coro_fn):
    async def main():
        batcher.start()
        try:
            return await coro_fn()
        finally:
            await asyncio.to_thread(batcher.close)

    return asyncio.run(main())


def test_requests_that_come_together_share_calls_up_to_max_batch():
    rec = Recorder()
    rec.gate.clear()  # the first call waits: the other nine queue up behind it
    batcher = Batcher(rec.predict, rec.predict_large, max_batch=4, timeout=0.5)

    async def go():
        pending = asyncio.ensure_future(submit_all(batcher, range(10)))
        while batcher.in_flight < 10:
            await asyncio.sleep(0.01)
        rec.gate.set()
        return await pending

    results = run(batcher, go)
    assert [float(r["scores"]) for r in results] == list(range(10))  # each gets its own
    assert sorted(v for b in rec.batches for v in b) == list(range(10))
    assert max(map(len, rec.batches)) == 4 and len(rec.batches) <= 5
    assert (batcher.calls, batcher.images, batcher.in_flight) == (len(rec.batches), 10, 0)


def test_a_lone_request_waits_only_batch_timeout():
    rec = Recorder()
    batcher = Batcher(rec.predict, rec.predict_large, max_batch=8, timeout=0.05)
    start = time.monotonic()
    (result,) = run(batcher, lambda: submit_all(batcher, [7]))
    assert float(result["scores"]) == 7 and time.monotonic() - start < 5
    assert rec.batches == [[7]]


def test_a_failing_image_fails_alone():
    rec = Recorder(fail_on=2)
    rec.gate.clear()
    batcher = Batcher(rec.predict, rec.predict_large, max_batch=8, timeout=0.5)

    async def go():
        pending = asyncio.ensure_future(submit_all(batcher, range(5)))
        while batcher.in_flight < 5:
            await asyncio.sleep(0.01)
        rec.gate.set()
        return await pending

    results = run(batcher, go)
    assert isinstance(results[2], RuntimeError) and "cannot predict image 2" in str(results[2])
    assert [float(r["scores"]) for i, r in enumerate(results) if i != 2] == [0, 1, 3, 4]


def test_tiled_requests_run_alone_with_max_batch_windows():
    rec = Recorder()
    batcher = Batcher(rec.predict, rec.predict_large, max_batch=3, timeout=0.01)
    results = run(batcher, lambda: submit_all(batcher, [5], tile=400))
    assert float(results[0]["scores"]) == -1 and rec.large == [(5, 400, 3)] and not rec.batches


def test_close_answers_the_queued_requests_first():
    rec = Recorder()
    rec.gate.clear()
    batcher = Batcher(rec.predict, rec.predict_large, max_batch=2, timeout=0.0)

    async def go():
        pending = asyncio.ensure_future(submit_all(batcher, range(6)))
        while batcher.in_flight < 6:
            await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(asyncio.to_thread(batcher.close))
        rec.gate.set()
        await closing
        return await pending

    batcher.start()
    results = asyncio.run(go())
    assert [float(r["scores"]) for r in results] == list(range(6))


def test_submit_before_start_is_an_error():
    batcher = Batcher(Recorder().predict, Recorder().predict_large)
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(batcher.submit(image(0)))


def test_two_workers_run_batches_side_by_side():
    rec = Recorder()
    running, both = [0], threading.Event()
    lock = threading.Lock()

    def predict(images):  # returns once two calls overlap (or after 5 s)
        with lock:
            running[0] += 1
            if running[0] == 2:
                both.set()
        both.wait(5)
        with lock:
            running[0] -= 1
        return rec.predict(images)

    batcher = Batcher(predict, rec.predict_large, max_batch=2, timeout=0.0, workers=2)
    results = run(batcher, lambda: submit_all(batcher, range(8)))
    assert both.is_set() and [float(r["scores"]) for r in results] == list(range(8))

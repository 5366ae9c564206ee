"""Dynamic batching without a model: batches form up to max_batch_size, answers keep their
order, a full queue refuses and a slow answer times out."""

import asyncio
import threading
import time

import numpy as np
import pytest

from jaxvision.serving.batcher import Batcher, QueueFull


def _echo(batches: list, delay: float = 0.0):
    def predict(images):
        batches.append(len(images))
        time.sleep(delay)
        return {"value": np.array([float(i[0, 0, 0]) for i in images])}

    return predict


def _image(value: int) -> np.ndarray:
    return np.full((2, 2, 1), value, np.uint8)


def test_concurrent_requests_share_batches_and_keep_their_rows():
    batches = []
    batcher = Batcher(
        _echo(batches, delay=0.05), max_batch_size=8, max_delay_ms=50, queue_size=64, timeout_s=5
    )

    async def many():
        # 12 requests of 1-3 images each, all at once.
        requests = [[_image(10 * r + i) for i in range(1 + r % 3)] for r in range(12)]
        answers = await asyncio.gather(*(batcher.submit(images) for images in requests))
        return requests, answers

    requests, answers = asyncio.run(many())
    batcher.close()
    for images, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer["value"], [i[0, 0, 0] for i in images])
    assert sum(batches) == sum(len(r) for r in requests) == 24
    assert max(batches) <= 8 and len(batches) <= 6  # gathered, never over the limit


def test_a_full_queue_refuses_and_a_slow_answer_times_out():
    release = threading.Event()

    def stuck(images):
        release.wait(5)
        return {"value": np.zeros(len(images))}

    batcher = Batcher(stuck, max_batch_size=1, max_delay_ms=0, queue_size=1, timeout_s=1.0)

    async def flood():
        first = asyncio.ensure_future(batcher.submit([_image(1)]))  # taken by the worker
        await asyncio.sleep(0.6)  # the second's deadline comes well after the first's
        second = asyncio.ensure_future(batcher.submit([_image(2)]))  # waits in the queue
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await batcher.submit([_image(3)])
        with pytest.raises(TimeoutError):
            await first
        release.set()  # the worker drops the first's rows and answers the second in time
        assert (await second)["value"].tolist() == [0.0]

    asyncio.run(flood())
    batcher.close()


def test_a_failing_batch_answers_its_requests_and_the_worker_goes_on():
    calls = []

    def flaky(images):
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return {"value": np.ones(len(images))}

    batcher = Batcher(flaky, max_batch_size=4, max_delay_ms=0, queue_size=8, timeout_s=5)

    async def two():
        with pytest.raises(RuntimeError, match="device lost"):
            await batcher.submit([_image(1)])
        return await batcher.submit([_image(2)])

    assert asyncio.run(two())["value"].tolist() == [1.0]
    batcher.close()

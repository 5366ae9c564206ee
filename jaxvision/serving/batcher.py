"""Dynamic batching: concurrent requests gathered into one device batch.

Requests (each one or more images) wait in a bounded queue. One worker thread takes the oldest,
then keeps taking until the batch holds `max_batch_size` images or `max_delay_ms` have passed
since that first request arrived, runs the Predictor once (it pads to the next compiled bucket)
and answers every request with its own rows, in order. It waits for company only while more is
coming: requests the server has received but not yet queued (`expecting`, still being read and
decoded), or load (the last batch served several requests). A lone request runs at once.

A full queue refuses at once (QueueFull: the server's 503 with Retry-After); a request not
answered within `timeout_s` gets asyncio.TimeoutError (the server's 504) and its rows are
dropped when they come.
"""

import asyncio
import dataclasses
import queue
import threading
import time
from collections.abc import Callable

import jax
import numpy as np


class QueueFull(Exception):
    """The batcher's queue holds `queue_size` requests already."""


@dataclasses.dataclass
class _Request:
    images: list[np.ndarray]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float


class Batcher:
    """predict: images -> {name: [N, ...] numpy}, one row per image (a Predictor's predict).
    observe_batch(images in the batch) and observe_queue(depth) report to the server's metrics.
    """

    def __init__(
        self,
        predict: Callable[[list[np.ndarray]], dict],
        *,
        max_batch_size: int,
        max_delay_ms: float,
        queue_size: int,
        timeout_s: float,
        observe_batch: Callable[[int], None] = lambda n: None,
        observe_queue: Callable[[int], None] = lambda n: None,
    ):
        self.predict = predict
        self.max_batch_size, self.max_delay_s = max_batch_size, max_delay_ms / 1e3
        self.timeout_s = timeout_s
        self.observe_batch, self.observe_queue = observe_batch, observe_queue
        self._queue: queue.Queue[_Request | None] = queue.Queue(maxsize=queue_size)
        self._held: _Request | None = None  # taken, but did not fit the last batch
        self._last_requests = 0  # requests in the last batch: > 1 means under load
        self._expecting = 0  # received by the server, not yet queued
        self._worker = threading.Thread(target=self._run, name="device-worker", daemon=True)
        self._worker.start()

    def expecting(self, change: int) -> None:
        """The server has received (+1) or queued / refused (-1) a request: while any is on its
        way, a batch waits for it (up to max_delay_ms). Called from the event loop only."""
        self._expecting += change

    async def submit(self, images: list[np.ndarray]) -> dict:
        """The outputs for `images` (rows in their order); QueueFull or asyncio.TimeoutError."""
        loop = asyncio.get_running_loop()
        request = _Request(images, loop.create_future(), loop, time.monotonic())
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise QueueFull from None
        self.observe_queue(self._queue.qsize())
        return await asyncio.wait_for(request.future, self.timeout_s)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)

    def _next(self, timeout: float | None) -> _Request | None:
        if self._held is not None:
            request, self._held = self._held, None
            return request
        try:
            return self._queue.get(timeout=timeout) if timeout != 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _gather(self) -> list[_Request] | None:
        """The next batch (None: closing)."""
        first = self._next(timeout=None)
        if first is None:
            return None
        batch, count = [first], len(first.images)
        deadline = first.arrived + self.max_delay_s
        while count < self.max_batch_size:
            coming = self._expecting > 0 or self._last_requests > 1
            left = deadline - time.monotonic()
            # Polled in 1 ms slices while waiting: `expecting` may fall to 0 meanwhile.
            request = self._next(timeout=min(left, 1e-3) if coming and left > 0 else 0)
            if request is None:
                if coming and left > 0:
                    continue
                break
            if count + len(request.images) > self.max_batch_size:
                self._held = request  # opens the next batch
                break
            batch.append(request)
            count += len(request.images)
        self._last_requests = len(batch)
        return batch

    def _run(self) -> None:
        while (batch := self._gather()) is not None:
            live = [r for r in batch if not r.future.done()]  # timed out: skip their rows
            self.observe_queue(self._queue.qsize())
            if not live:
                continue
            images = [image for r in live for image in r.images]
            self.observe_batch(len(images))
            try:
                outputs = self.predict(images)
            except Exception as e:  # every waiting request gets it; the worker carries on
                for r in live:
                    r.loop.call_soon_threadsafe(_resolve, r.future, None, e)
                continue
            start = 0
            for r in live:
                stop = start + len(r.images)
                rows = jax.tree.map(lambda x, a=start, b=stop: x[a:b], outputs)
                r.loop.call_soon_threadsafe(_resolve, r.future, rows, None)
                start = stop


def _resolve(future: asyncio.Future, result, error) -> None:
    if future.done():  # timed out meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

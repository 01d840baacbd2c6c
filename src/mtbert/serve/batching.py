"""Concurrent requests batched together: each task's requests wait a short window for others, then run as one batch
in a worker thread, so that the event loop never waits for inference and throughput grows with load."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field


@dataclass
class Pending:
    items: list
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)
    taken: bool = False  # out of the queue: in a batch, or dropped (its client gone, its deadline passed)


class Overloaded(Exception):
    """More texts wait than the queue holds; `retry_after` seconds is about how long they take."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"{waiting} texts are waiting")
        self.waiting, self.retry_after = waiting, retry_after


class Batcher:
    """Batches the items of concurrent `submit` calls for `run` (a list of items -> a list of results, in order).

    The first waiting request opens a batch; requests arriving within `window_s` join it until it holds `max_items`
    items (a request is never split: one larger than `max_items` runs alone). `max_items` 1 serves one request at
    a time. Batches run one after another on `executor`; an error in one fails the requests of that batch only.

    Load is shed at the door: `submit` refuses (Overloaded) a request whose items would make more than `max_queue`
    wait (`waiting`: shared by the batchers of one server, a one-element list), and a request not served within
    `timeout_s` gives up (TimeoutError). A request given up, or whose caller was cancelled (its client went away),
    leaves the queue at once and is never computed.
    """

    def __init__(
        self,
        run: Callable[[list], list],
        executor: Executor,
        max_items: int = 64,
        window_s: float = 0.005,
        max_queue: int | None = None,
        timeout_s: float | None = None,
        waiting: list[int] | None = None,
    ):
        self.run, self.executor = run, executor
        self.max_items, self.window_s = max_items, window_s
        self.max_queue, self.timeout_s = max_queue, timeout_s
        self.waiting = waiting if waiting is not None else [0]  # items queued, not yet in a batch
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.worker: asyncio.Task | None = None
        self.batches = 0  # how many batches ran, and how many items they held: the served batch size
        self.items = 0
        self.seconds_per_item = 0.0  # a running average over the batches, for Retry-After

    async def submit(self, items: list) -> list:
        """The results of `items`, computed in a batch with other requests' items."""
        if self.max_queue is not None and self.waiting[0] + len(items) > self.max_queue:
            raise Overloaded(self.waiting[0], max(1, math.ceil(self.waiting[0] * self.seconds_per_item)))
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())
        pending = Pending(list(items), asyncio.get_running_loop().create_future())
        self.waiting[0] += len(pending.items)
        self.queue.put_nowait(pending)
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), self.timeout_s)
        finally:  # served, failed, timed out or cancelled: out of the queue either way
            pending.future.cancel()  # (no effect on a future that has its result)
            self._take(pending)

    def _take(self, pending: Pending) -> None:
        if not pending.taken:
            pending.taken = True
            self.waiting[0] -= len(pending.items)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        held: Pending | None = None  # a request that did not fit the last batch opens the next one
        while True:
            first = held or await self.queue.get()
            held = None
            batch, size = [first], len(first.items)
            deadline = loop.time() + self.window_s
            while size < self.max_items:
                try:
                    nxt = (
                        self.queue.get_nowait()
                        if self.queue.qsize()
                        else await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                    )
                except asyncio.TimeoutError:
                    break
                if size + len(nxt.items) > self.max_items:
                    held = nxt
                    break
                batch.append(nxt)
                size += len(nxt.items)
            for p in batch:
                self._take(p)
            batch = [p for p in batch if not p.future.done()]  # not given up, their clients still there
            if not batch:
                continue
            items = [item for p in batch for item in p.items]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.run, items)
            except Exception as e:  # the batch's requests fail; the worker serves on
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            per_item = (time.perf_counter() - started) / len(items)
            self.seconds_per_item = per_item if not self.batches else 0.8 * self.seconds_per_item + 0.2 * per_item
            self.batches, self.items = self.batches + 1, self.items + len(items)
            at = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(results[at : at + len(p.items)])
                at += len(p.items)

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass

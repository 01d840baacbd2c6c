"""Concurrent requests batched together: each task's requests wait a short window for others, then run as one batch
in a worker thread, so that the event loop never waits for inference and throughput grows with load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field


@dataclass
class Pending:
    items: list
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Batches the items of concurrent `submit` calls for `run` (a list of items -> a list of results, in order).

    The first waiting request opens a batch; requests arriving within `window_s` join it until it holds `max_items`
    items (a request is never split: one larger than `max_items` runs alone). `max_items` 1 serves one request at
    a time. Batches run one after another on `executor`; an error in one fails the requests of that batch only.
    """

    def __init__(self, run: Callable[[list], list], executor: Executor, max_items: int = 64, window_s: float = 0.005):
        self.run, self.executor = run, executor
        self.max_items, self.window_s = max_items, window_s
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.worker: asyncio.Task | None = None
        self.batches = 0  # how many batches ran, and how many items they held: the served batch size
        self.items = 0

    async def submit(self, items: list) -> list:
        """The results of `items`, computed in a batch with other requests' items."""
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(list(items), future))
        return await future

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
            batch = [p for p in batch if not p.future.cancelled()]  # clients that went away
            if not batch:
                continue
            items = [item for p in batch for item in p.items]
            try:
                results = await loop.run_in_executor(self.executor, self.run, items)
            except Exception as e:  # the batch's requests fail; the worker serves on
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
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

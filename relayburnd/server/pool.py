"""Storage adapters shared by concurrent requests, one request per adapter at a time.

An adapter holds one database connection and serialises its calls, so the
server keeps several: ``writers`` for batches and two ``readers`` for queries.
Keeping them apart means a slow report, or a client that reads a long listing
slowly, never holds the connection a batch is waiting for. SQLite takes one
writer at a time anyway, so it gets one writer adapter.

Waiting for a free adapter is bounded: past the request timeout the client
gets 503 with Retry-After, which its backoff honours, instead of a request
that hangs until its own timeout and is then retried on top of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.concurrency import run_in_threadpool

from ..storage import StorageAdapter
from .errors import busy

READERS = 2


class AdapterPool:
    """A fixed set of adapters handed out one at a time."""

    def __init__(self, make: Callable[[], StorageAdapter], size: int, what: str) -> None:
        self.what = what
        self.size = size
        self._adapters = [make() for _ in range(size)]
        self._free: asyncio.Queue[StorageAdapter] = asyncio.Queue()
        for adapter in self._adapters:
            self._free.put_nowait(adapter)

    async def acquire(self, timeout: float) -> StorageAdapter:
        try:
            return self._free.get_nowait()  # the usual case: no timer, no task
        except asyncio.QueueEmpty:
            pass
        try:
            return await asyncio.wait_for(self._free.get(), timeout)
        except TimeoutError:
            raise busy(self.what) from None

    def release(self, adapter: StorageAdapter) -> None:
        self._free.put_nowait(adapter)

    @contextlib.asynccontextmanager
    async def use(self, timeout: float) -> AsyncIterator[StorageAdapter]:
        adapter = await self.acquire(timeout)
        try:
            yield adapter
        finally:
            self.release(adapter)

    @property
    def in_use(self) -> int:
        return self.size - self._free.qsize()

    async def healthcheck(self, timeout: float) -> None:
        """Raises a ``SinkError`` when the store cannot be used."""
        async with self.use(timeout) as adapter:
            await run_in_threadpool(adapter.healthcheck)

    def close(self) -> None:
        for adapter in self._adapters:
            with contextlib.suppress(Exception):
                adapter.close()


class Pools:
    """The writer and reader pools of one server."""

    def __init__(self, make: Callable[[], StorageAdapter], storage: str, writers: int) -> None:
        self.storage = storage
        self.writers = AdapterPool(make, 1 if storage == "sqlite" else writers,
                                   "database connection for writing")
        self.readers = AdapterPool(make, READERS, "database connection for queries")

    def close(self) -> None:
        self.writers.close()
        self.readers.close()

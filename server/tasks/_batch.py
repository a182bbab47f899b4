"""Group commit on the event loop: concurrent calls that arrive together share one flush;
results that another thread produces in bursts reach the loop with one wake-up per burst.

A ``Batcher`` queues each call and runs its flush function over everything queued, at
most ``max_concurrent`` flushes at a time. Nothing waits for a batch to fill: a call that
finds a free flush slot starts one at once (a batch of one when the server is quiet),
and calls that arrive while every slot is busy form the next batch. Batches are thus as
large as the load makes them, and a flush costs one database round trip sequence (or
one wait for the broker) however many calls it serves.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

# What a flush returns for each input: its result, or the exception to raise to its caller.
Flush = Callable[[list[In]], Awaitable[Sequence[Out | Exception]]]


class Batcher(Generic[In, Out]):
    """Coalesces ``call``s into flushes of up to ``max_batch`` inputs."""

    def __init__(self, flush: Flush[In, Out], *, max_batch: int, max_concurrent: int = 1) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._max_concurrent = max_concurrent
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        # Drains started and not yet past their last look at _pending. Counted by the
        # drain itself, not by task completion: a done-callback runs a loop turn late,
        # and a call in between would find every slot taken and strand its input.
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until they end

    async def call(self, value: In) -> Out:
        """The flush's result for ``value`` (raises what the flush gave for it)."""
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((value, future))
        if self._active < self._max_concurrent:
            self._active += 1
            # A flush serves many callers: it runs in a context of its own, not in the
            # one of the caller that happened to start it (whose deadline, say, must not
            # bound the others' shared transaction).
            task = asyncio.create_task(self._drain(), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            await self._drain_pending()
        finally:
            self._active -= 1  # no await since the last look at _pending: none missed

    async def _drain_pending(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results: Sequence[Out | Exception] = await self._flush([v for v, _ in batch])
                if len(results) != len(batch):
                    raise AssertionError(f"flush gave {len(results)} results for {len(batch)}")
            except Exception as error:  # the whole flush failed: so did every call in it
                results = [error] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # the caller was cancelled; the flush did its work regardless
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


class LoopInbox(Generic[Out]):
    """Settles loop futures from another thread, waking the loop once per burst.

    ``call_soon_threadsafe`` writes to the loop's self-pipe on every call; a publisher
    thread settling a batch of confirms would wake the loop once per message.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[Out], Out]] = []

    def put(self, future: asyncio.Future[Out], value: Out) -> None:
        """Set ``future``'s result to ``value`` on the loop (callable from any thread)."""
        with self._lock:
            self._ready.append((future, value))
            first = len(self._ready) == 1
        if first:  # later puts join the callback already scheduled
            self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for future, value in ready:
            if not future.done():  # the waiting caller may have been cancelled
                future.set_result(value)

"""Load shapes of the task benchmark: closed loop, open loop (paced), and queue drains.

Every loop is bounded in calls and in time. Latencies are nanoseconds; a call that
fails is counted in ``errors`` and still timed, as in ``devtools.measure``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kombu.connection import Connection

from bench._tasks_cpu import TreeMeter
from devtools.measure import Errors, error_name

__all__ = ["Drain", "QueueGauge", "closed_loop", "drain", "open_loop"]

AsyncCall = Callable[[], Awaitable[object]]
_POLL_SECONDS = 0.01


async def _timed(call: AsyncCall, errors: Errors, start_ns: int) -> int:
    try:
        await call()
    except Exception as exc:
        errors[error_name(exc)] += 1
    return time.perf_counter_ns() - start_ns


async def closed_loop(
    call: AsyncCall, errors: Errors, *, calls: int, in_flight: int, time_limit_seconds: float
) -> tuple[list[int], float]:
    """``calls`` calls, ``in_flight`` at a time; (latency samples, wall seconds)."""
    deadline = time.monotonic() + time_limit_seconds
    remaining = calls
    samples: list[int] = []

    async def worker() -> None:
        nonlocal remaining
        # One event loop: the check and the decrement cannot interleave.
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            samples.append(await _timed(call, errors, time.perf_counter_ns()))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return samples, time.perf_counter() - start


async def open_loop(
    call: AsyncCall,
    errors: Errors,
    *,
    per_second: float,
    seconds: float,
    max_outstanding: int,
    time_limit_seconds: float,
) -> tuple[list[int], float, int]:
    """Start calls on a fixed schedule, whatever the earlier ones do (open loop).

    Each call is timed from its scheduled start, so a stall is charged to every call it
    delays (no coordinated omission). Returns (latency samples, seconds from the first
    scheduled start to the last completion, calls skipped because ``max_outstanding``
    were already in flight: each a sign the server could not keep up).
    """
    total = max(1, round(per_second * seconds))
    interval_ns = round(1e9 / per_second)
    samples: list[int] = []
    skipped = 0
    outstanding: set[asyncio.Task[None]] = set()

    async def one(scheduled_ns: int) -> None:
        samples.append(await _timed(call, errors, scheduled_ns))

    begin = time.perf_counter_ns()
    for i in range(total):
        scheduled = begin + i * interval_ns
        delay = (scheduled - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        if len(outstanding) >= max_outstanding:
            skipped += 1
            continue
        task = asyncio.create_task(one(scheduled))
        outstanding.add(task)
        task.add_done_callback(outstanding.discard)
    if outstanding:
        await asyncio.wait(set(outstanding), timeout=time_limit_seconds)
    for task in list(outstanding):  # only past the time limit
        task.cancel()
        errors["unfinished"] += 1
    return samples, (time.perf_counter_ns() - begin) / 1e9, skipped


class QueueGauge:
    """Ready-message counts of queues on one vhost (a passive declare per reading)."""

    def __init__(self, broker_url: str) -> None:
        self._connection: Any = Connection(broker_url, connect_timeout=5)
        self._lock = threading.Lock()

    def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (not counting those delivered and not yet acked)."""
        with self._lock:
            _name, count, _consumers = self._connection.default_channel.queue_declare(
                queue=queue, passive=True
            )
        return int(count)

    def purge(self, queue: str) -> int:
        """Drop every ready message of ``queue``; how many there were."""
        with self._lock:
            return int(self._connection.default_channel.queue_purge(queue=queue) or 0)

    def wait_depth(self, queue: str, at_least: int, *, timeout_seconds: float) -> int:
        """Poll until ``queue`` holds ``at_least`` ready messages (or the time is up)."""
        deadline = time.monotonic() + timeout_seconds
        count = self.depth(queue)
        while count < at_least and time.monotonic() < deadline:
            time.sleep(0.05)
            count = self.depth(queue)
        return count

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._connection.release()


@dataclass(frozen=True)
class Drain:
    """How fast a worker emptied a queue."""

    start_depth: int
    per_second: float | None
    """Messages taken per second between 90% and 10% of ``start_depth``; None if the
    queue did not fall that far within the time limit."""
    measured: int
    """Messages between the two readings the rate is taken from."""
    seconds: float
    final_depth: int


def drain(
    gauge: QueueGauge,
    queue: str,
    *,
    start_depth: int,
    time_limit_seconds: float,
    meter: TreeMeter | None = None,
) -> Drain:
    """Poll ``queue`` while a consumer empties it (blocking; run it in a thread).

    The rate is read between the first reading at or below 90% of ``start_depth`` and
    the first at or below 10%: the worker's start-up and the last messages are left
    out. ``meter`` runs over that same window.
    """
    high = start_depth * 9 // 10
    low = start_depth // 10
    deadline = time.monotonic() + time_limit_seconds
    begin: tuple[float, int] | None = None
    end: tuple[float, int] | None = None
    depth = gauge.depth(queue)
    while time.monotonic() < deadline:
        now = time.monotonic()
        if begin is None and depth <= high:
            begin = (now, depth)
            if meter is not None:
                meter.start()
        if begin is not None and depth <= low:
            end = (now, depth)
            if meter is not None:
                meter.stop()
            break
        time.sleep(_POLL_SECONDS)
        depth = gauge.depth(queue)
    # The rest drains while we wait for it, so the next phase starts from an empty queue.
    while depth > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        depth = gauge.depth(queue)
    if begin is None or end is None or end[0] <= begin[0]:
        return Drain(start_depth, None, 0, 0.0, depth)
    measured = begin[1] - end[1]
    seconds = end[0] - begin[0]
    return Drain(start_depth, measured / seconds, measured, seconds, depth)

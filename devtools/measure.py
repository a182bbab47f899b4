"""Latency (sequential calls) and throughput (fixed concurrency), bounded in count and time.

Latency: ``warmup`` calls, then up to ``calls`` calls one after another, each timed with
``time.perf_counter_ns``; p50/p99 are nearest-rank percentiles of those samples.
Throughput: a short warm-up burst, then up to ``calls`` calls by ``concurrency`` workers
that each start the next call as soon as their previous one returned; the figure is
completed calls over the wall time from the first start to the last completion.
Every loop also stops at its time limit, and the result records how many calls ran.

A call that raises is counted in ``errors`` (by gRPC status code or exception type) and,
for latency, still timed: a benchmark that drops its failures flatters the figures.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = [
    "Errors",
    "Latency",
    "Throughput",
    "error_name",
    "sample_alternating",
    "sample_async",
    "sample_sync",
    "summarize",
    "throughput_async",
    "throughput_threads",
]

AsyncCall = Callable[[], Awaitable[object]]
SyncCall = Callable[[], object]
Errors = Counter[str]
"""Failed calls by gRPC status code name or exception type."""


def error_name(exc: Exception) -> str:
    """A gRPC error's status code name, else the exception's type name."""
    code = getattr(exc, "code", None)
    name = getattr(code(), "name", None) if callable(code) else None
    return str(name) if name else type(exc).__name__


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of sequential calls, in microseconds."""

    calls: int
    p50_us: float
    p99_us: float
    mean_us: float


@dataclass(frozen=True, slots=True)
class Throughput:
    """Completed calls per second at a fixed number of calls in flight."""

    calls: int
    concurrency: int
    seconds: float

    def __add__(self, other: Throughput) -> Throughput:
        """Pool two runs at the same concurrency: total calls over total time."""
        return Throughput(self.calls + other.calls, self.concurrency, self.seconds + other.seconds)

    @property
    def per_second(self) -> float:
        """Calls per second."""
        return self.calls / self.seconds if self.seconds > 0 else 0.0


def _percentile(ordered: list[int], q: float) -> float:
    # Nearest rank: the smallest sample with at least q of all samples at or below it.
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1] / 1000.0


def summarize(samples_ns: list[int]) -> Latency:
    """Percentiles of latency samples (nanoseconds)."""
    if not samples_ns:
        raise RuntimeError("no call completed within the time limit")
    ordered = sorted(samples_ns)
    return Latency(
        calls=len(ordered),
        p50_us=_percentile(ordered, 0.50),
        p99_us=_percentile(ordered, 0.99),
        mean_us=sum(ordered) / len(ordered) / 1000.0,
    )


async def _try_async(call: AsyncCall, errors: Errors) -> None:
    try:
        await call()
    except Exception as exc:
        errors[error_name(exc)] += 1


def _try_sync(call: SyncCall, errors: Errors) -> None:
    try:
        call()
    except Exception as exc:
        errors[error_name(exc)] += 1


async def sample_async(
    call: AsyncCall, errors: Errors, *, calls: int, warmup: int, time_limit_seconds: float
) -> list[int]:
    """Time ``calls`` sequential awaits of ``call()`` after ``warmup`` untimed ones (ns)."""
    deadline = time.monotonic() + time_limit_seconds
    for _ in range(warmup):
        await _try_async(call, errors)
        if time.monotonic() > deadline:
            break
    deadline = time.monotonic() + time_limit_seconds
    samples: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        await _try_async(call, errors)
        samples.append(clock() - start)
        if time.monotonic() > deadline:
            break
    return samples


async def sample_alternating(
    calls: tuple[AsyncCall, AsyncCall],
    errors: tuple[Errors, Errors],
    *,
    rounds: int,
    warmup: int,
    time_limit_seconds: float,
) -> tuple[list[int], list[int]]:
    """Time two paths call by call in alternation (ns): ``rounds`` rounds of one call each,
    in the order A B, B A, A B, ... after ``warmup`` untimed rounds.

    For a ratio of two paths that differ by a few percent: measured one after the other,
    the drift of a shared machine between the two runs is as large as the difference;
    alternated, both see the same moments, and neither always goes first.
    """
    deadline = time.monotonic() + time_limit_seconds
    for _ in range(warmup):
        for call, failed in zip(calls, errors, strict=True):
            await _try_async(call, failed)
        if time.monotonic() > deadline:
            break
    deadline = time.monotonic() + time_limit_seconds
    samples: tuple[list[int], list[int]] = ([], [])
    clock = time.perf_counter_ns
    for number in range(rounds):
        order = (0, 1) if number % 2 == 0 else (1, 0)
        for index in order:
            start = clock()
            await _try_async(calls[index], errors[index])
            samples[index].append(clock() - start)
        if time.monotonic() > deadline:
            break
    return samples


def sample_sync(
    call: SyncCall, errors: Errors, *, calls: int, warmup: int, time_limit_seconds: float
) -> list[int]:
    """Time ``calls`` sequential ``call()`` after ``warmup`` untimed ones (blocking, ns)."""
    deadline = time.monotonic() + time_limit_seconds
    for _ in range(warmup):
        _try_sync(call, errors)
        if time.monotonic() > deadline:
            break
    deadline = time.monotonic() + time_limit_seconds
    samples: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        _try_sync(call, errors)
        samples.append(clock() - start)
        if time.monotonic() > deadline:
            break
    return samples


async def throughput_async(
    call: AsyncCall,
    errors: Errors,
    *,
    calls: int,
    concurrency: int,
    warmup: int,
    time_limit_seconds: float,
) -> Throughput:
    """Run ``calls`` awaits of ``call()`` with ``concurrency`` of them in flight at once."""

    async def burst(total: int, deadline: float) -> int:
        remaining = total
        done = 0

        async def worker() -> None:
            nonlocal remaining, done
            # One event loop: the check and the decrement cannot interleave.
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                await _try_async(call, errors)
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done

    await burst(warmup, time.monotonic() + time_limit_seconds)
    start = time.perf_counter()
    done = await burst(calls, time.monotonic() + time_limit_seconds)
    return Throughput(done, concurrency, time.perf_counter() - start)


def throughput_threads(
    make_call: Callable[[], SyncCall],
    errors: Errors,
    *,
    calls: int,
    concurrency: int,
    warmup: int,
    time_limit_seconds: float,
) -> Throughput:
    """Like throughput_async for a blocking client: ``concurrency`` threads, each with
    its own ``make_call()`` (pymemcache clients are not thread-safe)."""
    per_thread = [make_call() for _ in range(concurrency)]
    lock = threading.Lock()

    def burst(total: int, deadline: float) -> int:
        remaining = total
        done = 0

        def worker(call: SyncCall) -> None:
            nonlocal remaining, done
            while time.monotonic() < deadline:
                with lock:
                    if remaining <= 0:
                        return
                    remaining -= 1
                failed: Exception | None = None
                try:
                    call()
                except Exception as exc:
                    failed = exc
                with lock:
                    done += 1
                    if failed is not None:
                        errors[error_name(failed)] += 1

        threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in per_thread]
        for thread in threads:
            thread.start()
        for thread in threads:
            # Calls have their own socket timeouts; the join bound only guards a bug.
            thread.join(time_limit_seconds + 10)
        return done

    burst(warmup, time.monotonic() + time_limit_seconds)
    start = time.perf_counter()
    done = burst(calls, time.monotonic() + time_limit_seconds)
    return Throughput(done, concurrency, time.perf_counter() - start)

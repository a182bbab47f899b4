"""Phases 3 and 4 of the task section: event latency with many open WatchTask streams,
and a reconnect storm of watchers resuming from their last sequence."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tests.bench._tasks_cpu import TreeMeter
from tests.bench._tasks_plan import (
    EVENT_P50_MAX_MS,
    EVENT_P99_MAX_MS,
    Run,
    cancel_all,
    per_op_ms,
    percentiles,
    submit_probes,
    wait_running,
)
from tests.bench._tasks_report import CPU_ROLES, TaskCheck, TaskFigure
from tests.bench._tasks_watch import (
    Channels,
    LatencyWindow,
    Watcher,
    follow_all,
    sequence_faults,
    wait_first_items,
)

__all__ = ["events_phase", "storm_phase"]

_STREAM_TIMEOUT_SECONDS = 300.0
_EARLY_SECONDS = 4.0
# Per delivered event only these processes do work that scales with the watchers; the
# worker's and the broker's CPU is per event written, whatever the number of watchers.
_EVENT_ROLES = (CPU_ROLES[0], CPU_ROLES[1], CPU_ROLES[4])


async def _watch_window(
    run: Run, watchers: list[Watcher], channel_count: int, seconds: float
) -> tuple[LatencyWindow, dict[str, float], int]:
    """Connect ``watchers``, then count the latency of events written in ``seconds``."""
    window = LatencyWindow()
    channels = Channels(run.server.address, channel_count)
    await channels.ready(10.0)
    tasks = follow_all(watchers, channels, window=window, timeout_seconds=_STREAM_TIMEOUT_SECONDS)
    connected = await wait_first_items(watchers, 60.0)
    meter = run.meters.meter()
    window.open()
    meter.start()
    await asyncio.sleep(seconds)
    window.close()
    cpu = {role: s for role, s in meter.stop().items() if role in _EVENT_ROLES}
    await channels.close()
    await asyncio.wait(tasks, timeout=10.0)
    return window, cpu, connected


def _contiguous(watcher: Watcher) -> bool:
    return watcher.sequences == list(range(1, len(watcher.sequences) + 1))


async def events_phase(run: Run, stub: Any) -> None:
    """Event latency, one watcher per running task, then ``plan.watchers`` watchers."""
    plan = run.plan
    run.progress(f"tasks: event latency, {plan.event_tasks} running probes")
    ids = await submit_probes(
        stub, plan.event_tasks, steps=10_000, step_millis=plan.event_step_millis
    )
    try:
        running = await wait_running(stub, ids, 30.0)
        base = [Watcher(task_id) for task_id in ids]
        base_window, _, _ = await _watch_window(run, base, 1, plan.baseline_seconds)
        run.progress(f"tasks: event latency, {plan.watchers} watchers")
        many = [Watcher(ids[i % len(ids)]) for i in range(plan.watchers)]
        window, cpu, connected = await _watch_window(
            run, many, max(1, plan.channels // 2), plan.window_seconds
        )
    finally:
        await cancel_all(stub, ids)
    per_task = plan.watchers // plan.event_tasks
    for label, w, c, count in (
        # Too few events in the baseline for CPU per event to mean anything.
        ("event latency, 1 watcher per task", base_window, {}, len(base)),
        (f"event latency, {plan.watchers} watchers", window, cpu, plan.watchers),
    ):
        p50, p99 = percentiles(w.latencies_ms)
        run.figures.append(
            TaskFigure(
                label,
                "worker commit -> notification (RabbitMQ fanout) -> API server -> "
                "PostgreSQL read per watcher -> stream",
                p50,
                p99,
                len(w.latencies_ms) / (w.end - w.start),
                f"{count} streams on {plan.event_tasks} tasks",
                len(w.latencies_ms),
                {},
                per_op_ms(c, len(w.latencies_ms)),
            )
        )
    p50, p99 = percentiles(window.latencies_ms)
    run.checks += [
        TaskCheck(
            f"event latency p50, {plan.watchers} watchers ({per_task} per task)",
            "-" if p50 is None else f"{p50:.1f} ms",
            f"<= {EVENT_P50_MAX_MS:.0f} ms",
            p50 is not None and p50 <= EVENT_P50_MAX_MS,
        ),
        TaskCheck(
            f"event latency p99, {plan.watchers} watchers ({per_task} per task)",
            "-" if p99 is None else f"{p99:.1f} ms",
            f"<= {EVENT_P99_MAX_MS:.0f} ms",
            p99 is not None and p99 <= EVENT_P99_MAX_MS,
        ),
    ]
    broken = sum(1 for w in [*base, *many] if not _contiguous(w))
    run.sanity.append(
        f"events: {running} of {len(ids)} probes running; {connected} of {plan.watchers} "
        f"watchers received their history before the window; {broken} watchers saw a "
        "gap or a repeat (expected 0)"
    )


@dataclass
class _Wave:
    """Streams started at once over fresh channels, and how fast their first items came."""

    channels: Channels
    tasks: list[asyncio.Task[None]]
    begin: float
    served: int
    seconds: float
    """From the start (channels connecting included) until every watcher's first item,
    or until the time limit when some never got one."""


async def _connect(run: Run, watchers: list[Watcher], timeout_seconds: float) -> _Wave:
    """Open the channels and one stream per watcher at once; wait (bounded) for each
    stream's first item."""
    begin = time.monotonic()  # connecting is part of reconnecting
    channels = Channels(run.server.address, run.plan.channels)
    await channels.ready(10.0)
    tasks = follow_all(watchers, channels, window=None, timeout_seconds=_STREAM_TIMEOUT_SECONDS)
    served = await wait_first_items(watchers, timeout_seconds)
    return _Wave(channels, tasks, begin, served, time.monotonic() - begin)


async def _settle(run: Run, *, busy_cores: float = 0.25, limit_seconds: float = 20.0) -> float:
    """Wait (bounded) until the API server is nearly idle; how long that took.

    A server that just lost thousands of streams can still be busy with them (reads
    already running in its database threads, cancellations); the scaled-down storm is
    measured from a quiet server.
    """
    meter = TreeMeter({"server": run.meters.server_pid})
    begin = time.monotonic()
    while time.monotonic() - begin < limit_seconds:
        meter.start()
        await asyncio.sleep(1.0)
        if meter.stop().get("server", 0.0) < busy_cores:
            break
    return time.monotonic() - begin


async def _drop(wave: _Wave, watchers: list[Watcher]) -> int:
    """Close every channel at once; how many streams that ended."""
    await wave.channels.close()
    await asyncio.wait(wave.tasks, timeout=10.0)
    dropped = 0
    for w in watchers:
        dropped += sum(w.errors.values())  # a dropped stream ends CANCELLED, one way or another
        w.errors.clear()
    return dropped


def _scale(run: Run, watchers: list[Watcher], wave: _Wave) -> int:
    """The storm size this machine can hold, from an attempt that did not connect all."""
    n = run.plan.storm_watchers
    # The attempt's first seconds show the rate at which the server serves new streams
    # (one database read each) before the idle re-reads begin: an idle watcher re-reads
    # the task every heartbeat interval (5 s) and on every event (the storm's probes
    # write one every storm_step_millis, also 5 s), so N watchers cost N / 5 reads/s
    # for as long as they stay. The storm keeps that to half the rate, leaving the
    # other half for the drop and resume being measured.
    early = _EARLY_SECONDS
    rate = (
        sum(
            1
            for w in watchers
            if w.first_item_at is not None and w.first_item_at - wave.begin <= early
        )
        / early
    )
    size = max(100, min(n - 100, int(rate * 5 * 0.5) // 100 * 100))
    run.scaled_down = (
        f"the storm was tried with {n} watchers: {wave.served} had their first item "
        f"after {wave.seconds:.0f} s, not all; the server's database reads saturated. It "
        f"served {rate:.0f} new streams/s in the first {early:.0f} s, while every connected "
        f"watcher re-reads the database every 5 s (heartbeat and progress events alike), so "
        f"{n} watchers alone would ask for {n // 5} reads/s. The drop and resume were "
        f"measured with {size} watchers, whose re-reads take about half that rate."
    )
    return size


async def storm_phase(run: Run, stub: Any) -> None:
    """Drop every watcher's connection at once; all resume from their last sequence."""
    plan = run.plan
    n = plan.storm_watchers
    run.progress(f"tasks: reconnect storm, {n} watchers")
    ids = await submit_probes(
        stub, plan.event_tasks, steps=10_000, step_millis=plan.storm_step_millis
    )
    try:
        running = await wait_running(stub, ids, 60.0)
        watchers = [Watcher(ids[i % len(ids)]) for i in range(n)]
        first = await _connect(run, watchers, plan.storm_attempt_seconds)
        if first.served < n:
            run.progress(f"tasks: {first.served} of {n} connected in {first.seconds:.0f} s")
            await _drop(first, watchers)
            n = _scale(run, watchers, first)
            settled = await _settle(run)
            run.progress(f"tasks: server idle again after {settled:.0f} s; storm of {n}")
            watchers = [Watcher(ids[i % len(ids)]) for i in range(n)]
            first = await _connect(run, watchers, 60.0)
        connected, connect_seconds = first.served, first.seconds
        run.progress(f"tasks: {connected} watchers connected in {connect_seconds:.1f} s; drop")
        dropped = await _drop(first, watchers)
        # Each task gets an event none of the dropped watchers saw (CANCELLING); the
        # worker then stops it at its next step (CANCELLED, the terminal event).
        await cancel_all(stub, ids)
        second = await _connect(run, watchers, plan.storm_resume_seconds)
        resumed, resume_seconds = second.served, second.seconds
        run.progress(f"tasks: {resumed} watchers resumed in {resume_seconds:.1f} s; to the end")
        await asyncio.wait(second.tasks, timeout=plan.storm_resume_seconds)
        await second.channels.close()
    finally:
        await cancel_all(stub, ids)
    faults = Counter(sequence_faults(w) for w in watchers)
    clean = faults.pop("", 0)
    errors = Counter[str]()
    for w in watchers:
        errors.update(w.errors)
    streams = f"{n} streams on {len(ids)} tasks"
    run.figures += [
        TaskFigure(
            f"storm: {n} watchers connect",
            "WatchTask from sequence 0: history replay per stream",
            None,
            None,
            connected / connect_seconds if connect_seconds else None,
            streams,
            connected,
        ),
        TaskFigure(
            f"storm: {n} watchers resume",
            "WatchTask from the last sequence after every connection dropped",
            None,
            None,
            resumed / resume_seconds if resume_seconds else None,
            streams,
            resumed,
            dict(errors),
        ),
    ]
    faulty = ", ".join(f"{k}: {v}" for k, v in sorted(faults.items()))
    run.checks += [
        TaskCheck(
            f"storm: {n} watchers resumed without gap or repeat, through the terminal event",
            f"{clean} of {n}" + (f" ({faulty})" if faulty else ""),
            f"= {n}",
            clean == n,
        ),
        TaskCheck(
            f"storm: time until all {n} watchers resumed",
            f"{resume_seconds:.1f} s"
            if resumed == n
            else f"{resumed} of {n} by {resume_seconds:.0f} s",
            "(reported)",
            None,
        ),
    ]
    run.sanity.append(
        f"storm: {running} of {len(ids)} probes running; {connected} of {n} connected in "
        f"{connect_seconds:.1f} s; {dropped} streams ended by closing their channels; "
        f"{resumed} resumed"
    )

"""Phases 3 and 4 of the task section: event latency with many open WatchTask streams,
and a reconnect storm of watchers resuming from their last sequence."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench._tasks_cpu import TreeMeter
from bench._tasks_plan import (
    EVENT_P50_MAX_MS,
    EVENT_P99_MAX_MS,
    Run,
    cancel_all,
    per_op_ms,
    percentiles,
    submit_probes,
    wait_running,
)
from bench._tasks_report import CPU_ROLES, TaskCheck, TaskFigure
from bench._tasks_watch import (
    Channels,
    LatencyWindow,
    Watcher,
    follow_all,
    sequence_faults,
    wait_first_items,
)
from tests._identity import authorized_aio_channel

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
                "one PostgreSQL read per task (shared feed) -> every stream of the task",
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


def _scale(run: Run, watchers: list[Watcher], wave: _Wave, errors: Counter[str]) -> int:
    """The storm size this machine can hold, from an attempt that did not connect all."""
    n = run.plan.storm_watchers
    # The attempt's first seconds show the rate at which the server served new streams.
    # The scaled-down storm keeps to half of what it served in 5 s, leaving the other
    # half for the drop and resume being measured.
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
    refused = ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"
    run.scaled_down = (
        f"the storm was tried with {n} watchers: {wave.served} had their first item "
        f"after {wave.seconds:.0f} s, not all (streams that failed: {refused}). It served "
        f"{rate:.0f} new streams/s in the first {early:.0f} s. The drop and resume were "
        f"measured with {size} watchers."
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
            # Streams that ended before the drop were refused or failed; say how.
            failed = Counter[str]()
            for w in watchers:
                failed.update(w.errors)
            await _drop(first, watchers)
            n = _scale(run, watchers, first, failed)
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


# --- phases 3 and 4 alone -------------------------------------------------------------
# ``python -m bench._tasks_events [--quick] [--watchers N] [--storm N]``: the event
# phases without the cache section and the submit/drain phases, on a fresh PostgreSQL
# database and a private vhost, for iterating on the watch path. Same phases, same
# measurement; prints the figures, checks and sanity lines.


_SITECUSTOMIZE = """\
import server.app as _app

_options = _app.server_options


def _with_backlog(config):
    return _options(config) + [
        ("grpc.server.max_pending_requests", {n}),
        ("grpc.server.max_pending_requests_hard_limit", {n}),
    ]


_app.server_options = _with_backlog
"""


async def _events_only(plan: Any, workdir: Any, progress: Any, pending_requests: int) -> Run:
    from contextlib import AsyncExitStack

    from agentic.tasks.v1 import tasks_pb2_grpc

    from bench._tasks_plan import ENV
    from tests._support import postgres_database
    from tests.workers._stack import private_vhost, stack

    async with AsyncExitStack() as exits:
        broker_url = exits.enter_context(private_vhost())
        database_url = exits.enter_context(postgres_database(workdir / "pg"))
        # As in make bench: authentication on, the one bench principal's limits raised (ENV).
        s = exits.enter_context(stack(workdir, broker_url, database_url, **ENV))
        extra: dict[str, str] = {}
        if pending_requests:
            # Try a gRPC server setting without editing server/app.py: the API server
            # imports this sitecustomize at start and adds the channel arguments.
            site = workdir / "site"
            site.mkdir()
            (site / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(n=pending_requests))
            extra["PYTHONPATH"] = str(site)
        await asyncio.to_thread(lambda: s.start_server(**extra))
        run = Run(s, plan, progress, database_url, broker_url)
        channel = await exits.enter_async_context(
            authorized_aio_channel(run.server.address, options=[("grpc.enable_http_proxy", 0)])
        )
        stub = tasks_pb2_grpc.TaskServiceStub(channel)
        await asyncio.to_thread(lambda: s.start_worker(concurrency=plan.event_tasks, timeout=60.0))
        limit = plan.phase_time_limit_seconds
        await asyncio.wait_for(events_phase(run, stub), limit)
        await asyncio.wait_for(storm_phase(run, stub), limit * 2)
        progress("stopping workers and the API server")
    return run


def _main() -> None:
    import argparse
    import dataclasses
    import sys
    import tempfile
    from pathlib import Path

    from bench.__main__ import _QUICK_TASKS
    from bench._tasks_plan import TaskPlan

    parser = argparse.ArgumentParser(prog="python -m bench._tasks_events")
    parser.add_argument("--quick", action="store_true", help="the --quick task plan")
    parser.add_argument("--watchers", type=int, default=None)
    parser.add_argument("--storm", type=int, default=None)
    parser.add_argument(
        "--server-pending-requests",
        type=int,
        default=0,
        help="start the API server with grpc.server.max_pending_requests (and its hard "
        "limit) set to this (gRPC's defaults: 1000 and 3000)",
    )
    args = parser.parse_args()
    plan = _QUICK_TASKS if args.quick else TaskPlan()
    if args.watchers is not None:
        plan = dataclasses.replace(plan, watchers=args.watchers)
    if args.storm is not None:
        plan = dataclasses.replace(plan, storm_watchers=args.storm)

    def progress(message: str) -> None:
        print(f"[events {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="agentic-events-") as tmp:
        run = asyncio.run(
            asyncio.wait_for(
                _events_only(plan, Path(tmp), progress, args.server_pending_requests), 900.0
            )
        )
    for f in run.figures:
        p50 = "-" if f.p50_ms is None else f"{f.p50_ms:.1f}"
        p99 = "-" if f.p99_ms is None else f"{f.p99_ms:.1f}"
        rate = "-" if f.per_second is None else f"{f.per_second:.0f}/s"
        cpu = ", ".join(f"{k} {v:.3f}" for k, v in f.cpu_ms.items())
        print(
            f"{f.label}: p50 {p50} ms p99 {p99} ms, {rate}, n={f.count} {f.errors or ''} "
            f"cpu ms/op: {cpu}"
        )
    for c in run.checks:
        print(f"check {c.name}: {c.measured} (target {c.target}) {c.passed}")
    for line in run.sanity:
        print(f"sanity: {line}")
    if run.scaled_down:
        print(f"scaled down: {run.scaled_down}")


if __name__ == "__main__":
    _main()

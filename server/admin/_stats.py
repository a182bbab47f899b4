"""The figures GetTaskStats and GetCacheStats report, computed from their sources.

Tasks: counts per (kind, state) and the oldest pending task are SQL aggregates (the same
SQL on SQLite and PostgreSQL). Percentiles are not: SQLite has no ``percentile_cont``,
so the timings are computed here, by nearest rank, over a bounded sample (the newest
``SAMPLE_LIMIT`` tasks of each kind in the window, by start or end time), one query per
sample. Queue depth and consumers are the broker's own figures (``core.tasks.queue_figures``,
a passive declare of the work queue and its dead-letter queue), mapped here.

Cache: the sidecar's ``Stats`` mapped field by field; nothing is derived but the hit
ratio.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from agentic.admin.v1 import admin_pb2
from agentic.cache.v1 import cache_pb2
from agentic.tasks.v1 import tasks_pb2
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from core.db import TaskRow, utc
from core.tasks import QueueFigures

SAMPLE_LIMIT = 10_000
"""Tasks per kind and measure the percentiles are taken over (newest first)."""


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _seconds(message: object, seconds: float) -> None:
    message.FromTimedelta(timedelta(seconds=seconds))  # type: ignore[attr-defined]


def queue_depths(figures: list[QueueFigures]) -> list[admin_pb2.QueueDepth]:
    """The broker's answers as GetTaskStats reports them."""
    return [
        admin_pb2.QueueDepth(
            queue=f.queue,
            reachable=f.reachable,
            messages=f.messages,
            consumers=f.consumers,
            error=f.error,
        )
        for f in figures
    ]


def task_stats(
    engine: Engine, *, window: timedelta, now: datetime | None = None
) -> admin_pb2.GetTaskStatsResponse:
    """Counts, the oldest pending age and the timings over ``window`` ending ``now``."""
    now = now or datetime.now(UTC)
    since = now - window
    response = admin_pb2.GetTaskStatsResponse()
    response.window_start.FromDatetime(since)
    started: dict[int, list[float]] = defaultdict(list)
    ran: dict[int, list[float]] = defaultdict(list)
    with sessionmaker(engine)() as session:
        counted = session.execute(
            select(TaskRow.kind, TaskRow.state, func.count())
            .group_by(TaskRow.kind, TaskRow.state)
            .order_by(TaskRow.kind, TaskRow.state)
        )
        for kind, state, count in counted:
            response.counts.add(kind=kind, state=state, count=count)
        oldest = session.scalar(
            select(func.min(TaskRow.create_time)).where(
                TaskRow.state == tasks_pb2.TASK_STATE_PENDING
            )
        )
        kinds = [k for (k,) in session.execute(select(TaskRow.kind).distinct())]
        for kind in kinds:
            waits = session.execute(
                select(TaskRow.create_time, TaskRow.start_time)
                .where(TaskRow.kind == kind, TaskRow.start_time >= since)
                .order_by(TaskRow.start_time.desc())
                .limit(SAMPLE_LIMIT)
            )
            started[kind] = [(utc(s) - utc(c)).total_seconds() for c, s in waits if s is not None]
            runs = session.execute(
                select(TaskRow.start_time, TaskRow.end_time)
                .where(
                    TaskRow.kind == kind,
                    TaskRow.end_time >= since,
                    TaskRow.start_time.is_not(None),
                )
                .order_by(TaskRow.end_time.desc())
                .limit(SAMPLE_LIMIT)
            )
            ran[kind] = [
                (utc(e) - utc(s)).total_seconds()
                for s, e in runs
                if s is not None and e is not None
            ]
    if oldest is not None:
        _seconds(response.oldest_pending_age, max(0.0, (now - utc(oldest)).total_seconds()))
    for kind in sorted(set(started) | set(ran)):
        waits_sorted, runs_sorted = sorted(started[kind]), sorted(ran[kind])
        if not waits_sorted and not runs_sorted:
            continue
        timing = response.timings.add(kind=kind, started=len(waits_sorted), ended=len(runs_sorted))
        if waits_sorted:
            _seconds(timing.queue_wait_p50, percentile(waits_sorted, 0.5))
            _seconds(timing.queue_wait_p95, percentile(waits_sorted, 0.95))
        if runs_sorted:
            _seconds(timing.run_time_p50, percentile(runs_sorted, 0.5))
            _seconds(timing.run_time_p95, percentile(runs_sorted, 0.95))
    return response


def cache_stats(stats: cache_pb2.StatsResponse) -> admin_pb2.GetCacheStatsResponse:
    """The sidecar's Stats as GetCacheStats reports them."""
    response = admin_pb2.GetCacheStatsResponse(cache_enabled=True)
    for ns in stats.namespaces:
        answered = ns.hits + ns.negative_hits
        reads = answered + ns.misses
        response.namespaces.add(
            namespace=ns.namespace,
            hits=ns.hits,
            misses=ns.misses,
            negative_hits=ns.negative_hits,
            hit_ratio=answered / reads if reads else 0.0,
            lease_grants=ns.lease_grants,
            lease_waits=ns.lease_waits,
            lease_wait_timeouts=ns.lease_wait_timeouts,
            stale_set_rejections=ns.stale_set_rejections,
            fills_stored=ns.fills_stored,
            namespace_clears=ns.invalidations_namespace,
        )
    for node in stats.nodes:
        response.nodes.add(
            address=node.address,
            # The two enums share their numbers (admin.proto mirrors cache.proto's).
            breaker_state=int(node.breaker_state),
            quarantined=node.quarantined,
            reachable=node.reachable,
            bytes=node.bytes,
            items=node.curr_items,
            evictions=node.evictions,
        )
    return response

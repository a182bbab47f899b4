"""Prometheus metrics of the task pipeline, as the API server sees it.

Counters for what passes through this server (submits, WatchTask streams, the feed's
database reads) and gauges read from the database, the source of truth, at scrape time:
tasks per non-terminal state and kind, the outbox backlog (publishes the broker has not
confirmed) and the age of the oldest PENDING task, the one number to alert on when work
stops moving (no worker, a lost message, a stuck queue). The database is read at most
once per ``ScrapeRead`` window however often Prometheus scrapes, and a failed read
leaves the gauges out of that scrape rather than failing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from agentic.tasks.v1 import tasks_pb2
from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.tasks._scrape_read import ScrapeRead
from server.tasks._store import Gauges
from server.tasks._watch import WatchHub

log = logging.getLogger(__name__)

SUBMITS = Counter(
    "agentic_task_submits_total",
    "Tasks accepted by Submit RPCs (idempotent replays included).",
    ("kind",),
)
WATCH_STREAMS = Gauge("agentic_watch_streams", "Open WatchTask streams on this server.")


def _state(number: int) -> str:
    return (
        tasks_pb2.TaskState.Name(tasks_pb2.TaskState.ValueType(number))
        .removeprefix("TASK_STATE_")
        .lower()
    )


def _kind(number: int) -> str:
    return (
        tasks_pb2.TaskKind.Name(tasks_pb2.TaskKind.ValueType(number))
        .removeprefix("TASK_KIND_")
        .lower()
    )


class TaskCollector(Collector):
    """Database gauges and the watch hub's read counters, at scrape time."""

    def __init__(self, gauges: Callable[[], Gauges], hub: WatchHub) -> None:
        self._gauges = ScrapeRead(gauges, "task gauges")
        self._hub = hub

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The metric families of one scrape."""
        stats = self._hub.stats
        reads = CounterMetricFamily(
            "agentic_watch_feed_reads",
            "Event-log reads by WatchTask feeds: shared (one per task and notification), "
            "replay (a stream further behind than its feed), failed.",
            labels=("path",),
        )
        reads.add_metric(("shared",), stats.shared_reads)
        reads.add_metric(("replay",), stats.replay_reads)
        reads.add_metric(("failed",), stats.failed_reads)
        yield reads
        watched = GaugeMetricFamily("agentic_watched_tasks", "Tasks with at least one stream.")
        watched.add_metric((), self._hub.watched)
        yield watched
        gauges = self._gauges.get()
        if gauges is None:
            return
        active = GaugeMetricFamily(
            "agentic_tasks", "Tasks not yet ended, by state and kind.", labels=("state", "kind")
        )
        for (state, kind), count in sorted(gauges.active.items()):
            active.add_metric((_state(state), _kind(kind)), count)
        yield active
        outbox = GaugeMetricFamily(
            "agentic_task_outbox_rows", "Task publishes the broker has not confirmed yet."
        )
        outbox.add_metric((), gauges.outbox_rows)
        yield outbox
        oldest = GaugeMetricFamily(
            "agentic_task_oldest_pending_seconds",
            "Age of the oldest PENDING task (0 when none): work that is not moving.",
        )
        age = 0.0
        if gauges.oldest_pending_time is not None:
            age = max(0.0, (datetime.now(UTC) - gauges.oldest_pending_time).total_seconds())
        oldest.add_metric((), age)
        yield oldest

"""Prometheus metrics for operations alerts: the broker's queue figures and job outcomes.

Two collectors, registered next to ``TaskCollector`` by the serving process:

- ``BrokerFigures``: ``celery_queue_length`` and ``celery_active_consumer_count`` per
  queue (celery-exporter's names and label, so its dashboards and rules apply) for the
  work queue and its dead-letter queue. A scrape never talks to the broker: a background
  thread asks it (``core.tasks.queue_figures``, a passive declare with bounded timeouts)
  every ``REFRESH_SECONDS`` and the scrape reads the last answer. When the broker did not
  answer for every queue, or the last answer is older than ``MAX_AGE_SECONDS`` (a refresh
  stuck on a hung connection), the two families are left out and
  ``agentic_broker_figures_up`` is 0, so the absence is visible rather than silent.
- ``JobTimes``: ``agentic_backup_last_success_timestamp_seconds`` (the end of the newest
  SUCCEEDED backup task: the backup kind succeeds only once its backup verified) and, per
  job of ``core.tasks.JOBS``, ``agentic_job_last_success_timestamp_seconds`` and
  ``agentic_job_last_failure_timestamp_seconds`` (newest SUCCEEDED / FAILED task of the
  job's kind, whoever submitted it: a RunJob or a manual submit counts as a run). A series
  is absent while no such task exists (a fresh install, or retention purged them). One
  statement per scrape (at most once per ``ScrapeRead`` window): one ``max(end_time)`` scalar
  subquery per (kind, state), each the end of ``ix_tasks_kind_state_end_time`` (no scan).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime

from agentic.tasks.v1 import tasks_pb2
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from core.db import TaskRow, utc
from core.tasks import JOBS, QueueFigures, queue_figures
from server.tasks._scrape_read import ScrapeRead

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0
"""How often the broker is asked (a passive declare per queue on one short connection)."""
MAX_AGE_SECONDS = 30.0
"""An answer older than this is not exported: the refresh is stuck, say so."""

_SUCCEEDED = tasks_pb2.TASK_STATE_SUCCEEDED
_FAILED = tasks_pb2.TASK_STATE_FAILED


class BrokerFigures(Collector):
    """The broker's ready-message and consumer counts per queue, refreshed in the background."""

    def __init__(
        self,
        broker_url: str,
        queues: Sequence[str],
        *,
        ask: Callable[[str, Sequence[str]], list[QueueFigures]] = queue_figures,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self._url = broker_url
        self._queues = tuple(queues)
        self._ask = ask
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._answer: tuple[float, list[QueueFigures]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-figures", daemon=True)

    def start(self) -> None:
        """Start asking the broker (the first answer comes within the connect timeout)."""
        self._thread.start()

    def close(self) -> None:
        """Stop the refresh; waits at most for one bounded broker call."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._refresh_seconds + 10)

    def refresh(self) -> None:
        """Ask the broker once and keep its answer (blocking, bounded by its timeouts)."""
        try:
            figures = self._ask(self._url, self._queues)
        except Exception:  # queue_figures reports errors in its figures; anything else too
            log.warning("broker figures unavailable", exc_info=True)
            figures = [QueueFigures(q, error="the figures could not be read") for q in self._queues]
        with self._lock:
            self._answer = (time.monotonic(), figures)

    def _run(self) -> None:
        # Paced by the stop event: close() ends the wait at once.
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self._refresh_seconds)

    def _current(self) -> list[QueueFigures] | None:
        with self._lock:
            answer = self._answer
        if answer is None or time.monotonic() - answer[0] > MAX_AGE_SECONDS:
            return None
        figures = answer[1]
        return figures if all(f.reachable for f in figures) else None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The broker families of one scrape, from the last answer."""
        figures = self._current()
        up = GaugeMetricFamily(
            "agentic_broker_figures_up",
            "1 when the broker answered for every queue within the last "
            f"{MAX_AGE_SECONDS:.0f} s; 0 and no celery_queue_* series otherwise.",
        )
        up.add_metric((), 0 if figures is None else 1)
        yield up
        if figures is None:
            return
        length = GaugeMetricFamily(
            "celery_queue_length",
            "Messages ready in the queue, as the broker counts them.",
            labels=("queue_name",),
        )
        consumers = GaugeMetricFamily(
            "celery_active_consumer_count",
            "Consumers attached to the queue, as the broker counts them.",
            labels=("queue_name",),
        )
        for figure in figures:
            length.add_metric((figure.queue,), figure.messages)
            consumers.add_metric((figure.queue,), figure.consumers)
        yield length
        yield consumers


def _pairs() -> list[tuple[int, int]]:
    kinds = sorted({job.kind for job in JOBS.values()} | {tasks_pb2.TASK_KIND_BACKUP})
    return [(kind, state) for kind in kinds for state in (_SUCCEEDED, _FAILED)]


def last_outcomes(engine: Engine) -> dict[tuple[int, int], datetime]:
    """(kind, state) -> end_time of the newest task of that kind in that state, for the
    job kinds and SUCCEEDED / FAILED; one statement of scalar subqueries."""
    pairs = _pairs()
    columns = [
        select(func.max(TaskRow.end_time))
        .where(TaskRow.kind == kind, TaskRow.state == state)
        .scalar_subquery()
        for kind, state in pairs
    ]
    with engine.connect() as connection:
        row = connection.execute(select(*columns)).one()
    return {pair: utc(end) for pair, end in zip(pairs, row, strict=True) if end is not None}


class JobTimes(Collector):
    """Newest verified backup and newest success / failure of every job, at scrape time."""

    def __init__(self, read: Callable[[], Mapping[tuple[int, int], datetime]]) -> None:
        self._ends = ScrapeRead(read, "job times")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The job families of one scrape (left out when the database does not answer)."""
        ends = self._ends.get()
        if ends is None:
            return
        backup = GaugeMetricFamily(
            "agentic_backup_last_success_timestamp_seconds",
            "End time of the newest succeeded (so verified) backup task; absent when none.",
        )
        verified = ends.get((tasks_pb2.TASK_KIND_BACKUP, _SUCCEEDED))
        if verified is not None:
            backup.add_metric((), verified.timestamp())
        yield backup
        success = GaugeMetricFamily(
            "agentic_job_last_success_timestamp_seconds",
            "End time of the newest succeeded task of the job's kind; absent when none.",
            labels=("job",),
        )
        failure = GaugeMetricFamily(
            "agentic_job_last_failure_timestamp_seconds",
            "End time of the newest failed task of the job's kind; absent when none.",
            labels=("job",),
        )
        for name, job in sorted(JOBS.items()):
            for family, state in ((success, _SUCCEEDED), (failure, _FAILED)):
                end = ends.get((job.kind, state))
                if end is not None:
                    family.add_metric((name,), end.timestamp())
        yield success
        yield failure

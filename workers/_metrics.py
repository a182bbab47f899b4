"""The metrics of task attempts, as ``workers._execute`` sees them start and end.

Names and labels follow celery-exporter's where the concept is the same
(``celery_task_started_total{name}``, ``celery_task_runtime_seconds{name}``...), so its
community dashboards and rules apply; ``name`` is the kind's short name (``probe``), the
last part of the Celery task ``agentic.task.<name>``. Concepts celery-exporter lacks carry
the ``agentic_`` prefix and a ``kind`` label with the same values.

What counts is an attempt this worker claimed and ran (``ClaimOutcome.RUN``): it starts
once and ends at most once, as succeeded, failed (the code failed, its soft or hard time
limit passed, or its automatic retries ran out), retried (a transient error scheduled the
next attempt) or revoked (it stopped on a cancellation, cooperatively or killed after the
grace). An attempt that lost its claim ends none of them. A message whose attempt kept
losing its worker ends the task FAILED without running it: it counts as dead-lettered
only.

In ``python -m workers`` the pool children write these into the files of
prometheus_client's multiprocess mode, which the main process serves
(``workers._multiprocess``); elsewhere (tests calling ``execute``) they are ordinary
in-process metrics.
"""

from __future__ import annotations

import enum
from datetime import datetime

from prometheus_client import Counter, Histogram

from core.tasks import kind_fields

# Attempts last from tens of milliseconds (a probe, a small verification) to tens of
# minutes (a 5 GiB profile; hard limits stay under the broker's 30 min consumer timeout,
# raised together with it up to an hour): roughly 1-2.5-5 steps per decade over that range.
RUNTIME_BUCKETS = (
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
)  # fmt: skip
# An idle pipeline starts a task within tens of milliseconds; a backlog or a retry's
# backoff (up to 5 min) waits minutes; beyond half an hour is an outage, told apart up to
# an hour.
QUEUE_WAIT_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

STARTED = Counter("celery_task_started_total", "Attempts this worker claimed and started", ["name"])
SUCCEEDED = Counter(
    "celery_task_succeeded_total", "Attempts that ended with their result stored", ["name"]
)
FAILED = Counter(
    "celery_task_failed_total",
    "Attempts that ended the task FAILED (error, time limit, retries exhausted)",
    ["name"],
)
RETRIED = Counter(
    "celery_task_retried_total",
    "Attempts that failed transiently and scheduled the task's next attempt",
    ["name"],
)
REVOKED = Counter(
    "celery_task_revoked_total",
    "Attempts that ended the task CANCELLED (cooperatively or killed after the grace)",
    ["name"],
)
DEAD_LETTERED = Counter(
    "agentic_task_dead_lettered_total",
    "Messages rejected into the dead-letter queue: their attempt lost its worker too often "
    "and the task was FAILED without running",
    ["kind"],
)
RUNTIME = Histogram(
    "celery_task_runtime_seconds",
    "Time from an attempt's start to its end (the counted outcomes)",
    ["name"],
    buckets=RUNTIME_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "agentic_task_queue_wait_seconds",
    "Time from when an attempt could run (the task's creation for the first attempt, the "
    "retry's due time for later ones) to its start",
    ["kind"],
    buckets=QUEUE_WAIT_BUCKETS,
)


class Ending(enum.Enum):
    """How a started attempt ended."""

    SUCCEEDED = SUCCEEDED
    FAILED = FAILED
    RETRIED = RETRIED
    REVOKED = REVOKED


def kind_name(kind: int) -> str:
    """The ``name`` label of ``kind``: ``probe`` for TASK_KIND_PROBE."""
    return kind_fields(kind).name


def started(kind: int, *, ready: datetime | None, start: datetime) -> None:
    """An attempt of ``kind`` started at ``start``; it could run from ``ready`` (unknown:
    None, no wait observed)."""
    name = kind_name(kind)
    STARTED.labels(name).inc()
    if ready is not None:
        QUEUE_WAIT.labels(name).observe(max(0.0, (start - ready).total_seconds()))


def ended(kind: int, ending: Ending, *, runtime_seconds: float) -> None:
    """A started attempt of ``kind`` ended as ``ending`` after ``runtime_seconds``."""
    name = kind_name(kind)
    counter: Counter = ending.value
    counter.labels(name).inc()
    RUNTIME.labels(name).observe(runtime_seconds)


def dead_lettered(kind: int) -> None:
    """A message of ``kind`` goes to the dead-letter queue."""
    DEAD_LETTERED.labels(kind_name(kind)).inc()

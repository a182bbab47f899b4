"""The kinds a worker runs: kind -> (spec type, result type, function, limits, retry policy).

The built-in kinds are the entries of ``REGISTRY``. Modules named in
``AGENTIC_TASK_KIND_MODULES`` add theirs (``load_registry``): each exposes
``REGISTRATIONS: Sequence[Registration[Any, Any]]``, merged in at worker start and then
checked like the built-ins (``check_registry``). That is how a kind can live outside this
repository, or in a test's temporary directory.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from agentic.tasks.v1 import (
    analytics_pb2,
    compliance_report_pb2,
    maintenance_pb2,
    profile_dataset_pb2,
    tasks_pb2,
)
from google.protobuf.message import Message

from core.tasks import kind_fields
from workers._context import TaskContext, TransientError
from workers.analytics import run_analytics
from workers.backup import run_backup
from workers.cache_warm import run_cache_warm
from workers.compliance_report import run_compliance_report
from workers.probe import run_probe
from workers.profile_dataset import run_profile_dataset
from workers.retention import run_retention
from workers.verify_artifact import run_verify_artifact

SpecT = TypeVar("SpecT", bound=Message)
ResultT = TypeVar("ResultT", bound=Message)

# Our own watchdog stops an attempt at its hard limit; Celery's own hard limit, this much
# later, is the last resort should the watchdog itself be stuck.
CELERY_HARD_LIMIT_MARGIN_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Time limits of one attempt (one delivery) of a kind."""

    soft_seconds: float
    """Past this, the task code gets SoftTimeLimitExceeded and the task ends FAILED."""
    hard_seconds: float
    """Past this, the watchdog fails the task and kills the process running it."""
    memory_mib: int = 0
    """DuckDB memory limit of one running task of the kind; 0 means the worker's
    ``AGENTIC_DUCKDB_MEMORY_LIMIT_MIB``."""

    @property
    def celery_hard_seconds(self) -> float:
        """Celery's own hard limit: the longest a message can stay unacknowledged."""
        return self.hard_seconds + CELERY_HARD_LIMIT_MARGIN_SECONDS


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Automatic retries of transient failures, with exponential backoff and jitter."""

    max_retries: int = 3
    """Automatic retries before the task ends FAILED (RetryTask starts a fresh budget)."""
    backoff_first_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    transient: tuple[type[BaseException], ...] = (TransientError,)
    """Exception types worth retrying; anything else fails the task at once."""

    def delay_seconds(self, retry_number: int) -> float:
        """Delay before retry ``retry_number`` (1, 2, ...): doubling, capped, equal jitter."""
        ceiling: float = min(
            self.backoff_max_seconds, self.backoff_first_seconds * 2 ** (retry_number - 1)
        )
        # Half fixed, half random: spreads a burst of failures without retrying at once.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class Registration(Generic[SpecT, ResultT]):
    """Everything a worker needs to run one kind."""

    kind: int
    spec_type: type[SpecT]
    result_type: type[ResultT]
    run: Callable[[SpecT, TaskContext], ResultT]
    limits: Limits
    retry: RetryPolicy = field(default_factory=RetryPolicy)


REGISTRY: Mapping[int, Registration[Any, Any]] = {
    r.kind: r
    for r in (
        Registration(
            kind=tasks_pb2.TASK_KIND_PROBE,
            spec_type=tasks_pb2.ProbeSpec,
            result_type=tasks_pb2.ProbeResult,
            run=run_probe,
            # Long probes are for soak tests; 15 min is plenty and stays under the
            # broker's 30 min consumer_timeout with Celery's margin.
            limits=Limits(soft_seconds=900.0, hard_seconds=960.0),
        ),
        Registration(
            kind=tasks_pb2.TASK_KIND_VERIFY_ARTIFACT,
            spec_type=tasks_pb2.VerifyArtifactSpec,
            result_type=tasks_pb2.VerifyArtifactResult,
            run=run_verify_artifact,
            # 5 GiB (the largest artifact) read at 10 MiB/s takes under 9 minutes.
            limits=Limits(soft_seconds=1200.0, hard_seconds=1260.0),
            retry=RetryPolicy(max_retries=5, backoff_first_seconds=2.0, backoff_max_seconds=120.0),
        ),
        Registration(
            kind=tasks_pb2.TASK_KIND_PROFILE_DATASET,
            spec_type=profile_dataset_pb2.ProfileDatasetSpec,
            result_type=profile_dataset_pb2.ProfileDatasetResult,
            run=run_profile_dataset,
            # A 512 MiB CSV profiles at 23-25 MB/s end to end (bench._profile, 2 threads):
            # a 5 GiB CSV (the largest artifact) in about 4 minutes, 6x below the soft limit.
            limits=Limits(soft_seconds=1500.0, hard_seconds=1560.0),
            retry=RetryPolicy(max_retries=3, backoff_first_seconds=2.0, backoff_max_seconds=120.0),
        ),
        Registration(
            kind=tasks_pb2.TASK_KIND_ANALYTICS,
            spec_type=analytics_pb2.AnalyticsSpec,
            result_type=analytics_pb2.AnalyticsResult,
            run=run_analytics,
            limits=Limits(soft_seconds=1500.0, hard_seconds=1560.0),
            retry=RetryPolicy(max_retries=3, backoff_first_seconds=2.0, backoff_max_seconds=120.0),
        ),
        Registration(
            kind=tasks_pb2.TASK_KIND_COMPLIANCE_REPORT,
            spec_type=compliance_report_pb2.ComplianceReportSpec,
            result_type=compliance_report_pb2.ComplianceReportResult,
            run=run_compliance_report,
            # Measured: aspice-3.1 without an export 1.2 s, with a 100,000-item export
            # (5.7 MB CSV) 3.6 s on SQLite, 7.8 s on PostgreSQL, PDF included; the largest
            # export (250,000 items) stays far below 10 minutes.
            limits=Limits(soft_seconds=600.0, hard_seconds=660.0),
            # Transient: the database or object store blinked; bad data never retries.
            retry=RetryPolicy(max_retries=3, backoff_first_seconds=2.0, backoff_max_seconds=120.0),
        ),
        Registration(
            kind=tasks_pb2.TASK_KIND_RETENTION,
            spec_type=maintenance_pb2.RetentionSpec,
            result_type=maintenance_pb2.RetentionResult,
            run=run_retention,
            # A batch of 500 tasks with their events is a few tens of milliseconds: 15 min
            # is hundreds of thousands of rows, more than a daily run meets. A run cut short
            # keeps its batches done, and the next one goes on from there.
            limits=Limits(soft_seconds=900.0, hard_seconds=960.0),
            # Safe to retry: a new attempt finds done what is done.
            retry=RetryPolicy(max_retries=3, backoff_first_seconds=5.0, backoff_max_seconds=120.0),
        ),
        Registration(
            kind=tasks_pb2.TASK_KIND_CACHE_WARM,
            spec_type=maintenance_pb2.CacheWarmSpec,
            result_type=maintenance_pb2.CacheWarmResult,
            run=run_cache_warm,
            # A key costs a Get, a primary-key SELECT and a Fill (~1-3 ms on loopback):
            # 10,000 most-read keys or rule sets warm in well under a minute; 10 min is
            # room for a slow database without approaching the consumer_timeout.
            limits=Limits(soft_seconds=600.0, hard_seconds=660.0),
            # Transient: the sidecar or the database blinked; a retry finds the keys
            # warmed so far as already cached. Short backoff: warming is useful soon or
            # not at all.
            retry=RetryPolicy(max_retries=3, backoff_first_seconds=2.0, backoff_max_seconds=60.0),
        ),
        Registration(
            kind=tasks_pb2.TASK_KIND_BACKUP,
            spec_type=maintenance_pb2.BackupSpec,
            result_type=maintenance_pb2.BackupResult,
            run=run_backup,
            # Near the most the broker's 30 min consumer_timeout allows with the backoff below
            # (240 + 1500 + Celery's 30 s margin < 1800): a backup is written and then read
            # back whole (verify), so it takes about twice one copy of the database and the
            # file-store objects at disk or S3 speed; the tests' data set takes seconds. A
            # deployment past ~20 min raises AGENTIC_TASK_LIMITS with the broker's
            # consumer_timeout, or runs `python -m server.backup create --prune` from cron.
            limits=Limits(soft_seconds=1440.0, hard_seconds=1500.0),
            # Transient: pg_dump, the database or the destination failed; each retry writes a
            # new backup (a failed one leaves nothing that looks whole). Two retries, spaced
            # so a short outage passes: a backup is no request anyone waits for.
            retry=RetryPolicy(max_retries=2, backoff_first_seconds=30.0, backoff_max_seconds=240.0),
        ),
    )
}


def load_registry(
    modules: Sequence[str], builtin: Mapping[int, Registration[Any, Any]] = REGISTRY
) -> dict[int, Registration[Any, Any]]:
    """``builtin`` plus the ``REGISTRATIONS`` of each of ``modules`` (imported here).

    Raises ValueError when a module cannot be imported, has no ``REGISTRATIONS`` sequence
    of ``Registration`` entries, or registers a kind that is registered already.
    """
    merged = dict(builtin)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"task kind module {name!r} cannot be imported: {exc}") from exc
        entries = getattr(module, "REGISTRATIONS", None)
        if not isinstance(entries, Sequence) or not all(
            isinstance(entry, Registration) for entry in entries
        ):
            raise ValueError(
                f"task kind module {name!r} needs REGISTRATIONS: Sequence[Registration]"
            )
        for entry in entries:
            if entry.kind not in tasks_pb2.TaskKind.values():
                raise ValueError(
                    f"task kind module {name!r} registers kind {entry.kind}, which TaskKind "
                    "does not define (are its generated protos on the path?)"
                )
            if entry.kind in merged:
                raise ValueError(
                    f"task kind module {name!r} registers "
                    f"{tasks_pb2.TaskKind.Name(entry.kind)}, which is registered already"
                )
            merged[entry.kind] = entry
    return merged


def with_limits(
    registry: Mapping[int, Registration[Any, Any]], overrides: Mapping[str, Limits]
) -> dict[int, Registration[Any, Any]]:
    """``registry`` with the limits of the kinds ``overrides`` names (by short name)
    replaced: the operator's ``AGENTIC_TASK_LIMITS``. ValueError for an unknown kind."""
    by_name = {kind_fields(kind).name: kind for kind in registry}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise ValueError(
            f"AGENTIC_TASK_LIMITS names unknown kinds {', '.join(unknown)} "
            f"(known: {', '.join(sorted(by_name))})"
        )
    merged = dict(registry)
    for name, limits in overrides.items():
        kind = by_name[name]
        merged[kind] = replace(merged[kind], limits=limits)
    return merged


def check_registry(
    registry: Mapping[int, Registration[Any, Any]],
    *,
    consumer_timeout_seconds: float,
    claim_lease_seconds: float = 0.0,
) -> None:
    """Raise ValueError unless every kind is registered, wired and bounded correctly.

    A worker holds a message unacknowledged while it waits for the message's countdown
    (a backoff, or a claim lease to expire) and then while the task runs, so the longest
    countdown plus Celery's hard limit must stay below the broker's consumer_timeout.
    """
    problems: list[str] = []
    for kind in tasks_pb2.TaskKind.values():
        if kind == tasks_pb2.TASK_KIND_UNSPECIFIED:
            continue
        name = tasks_pb2.TaskKind.Name(kind)
        reg = registry.get(kind)
        if reg is None:
            problems.append(f"{name} has no registration in workers/_registry.py")
            continue
        try:
            wire = kind_fields(kind)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if reg.spec_type.DESCRIPTOR is not wire.spec_type:
            problems.append(f"{name}: spec_type is not the type of Task.{wire.spec_field}")
        if reg.result_type.DESCRIPTOR is not wire.result_type:
            problems.append(f"{name}: result_type is not the type of Task.{wire.result_field}")
        if not 0 < reg.limits.soft_seconds <= reg.limits.hard_seconds:
            problems.append(f"{name}: need 0 < soft limit <= hard limit")
        countdown = max(reg.retry.backoff_max_seconds, claim_lease_seconds)
        if countdown + reg.limits.celery_hard_seconds >= consumer_timeout_seconds:
            problems.append(
                f"{name}: longest countdown {countdown:g}s + hard limit "
                f"{reg.limits.hard_seconds:g}s + margin {CELERY_HARD_LIMIT_MARGIN_SECONDS:g}s "
                f"is not below the broker's consumer_timeout {consumer_timeout_seconds:g}s "
                "(AGENTIC_BROKER_CONSUMER_TIMEOUT_SECONDS): a running task would be "
                "redelivered and run twice"
            )
    if problems:
        raise ValueError("; ".join(problems))

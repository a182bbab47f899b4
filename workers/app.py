"""The Celery app of the task pipeline: ``celery -A workers.app worker`` or ``python -m workers``.

Configuration comes from the environment (``workers._config.WorkerConfig``) when this
module is imported. The broker settings every process shares are in
``core.tasks._broker`` (queue topology, confirms, acks late, JSON only, no result
backend); this module adds the tasks, one per registered kind, named
``agentic.task.<kind>`` with the kind's soft and hard time limits.

What a task does with its message (see ``workers._execute``):

- ACK: ran to its end, or there was nothing to run (ended, cancelled, stale attempt);
- LATER: another copy holds a live claim: ``retry`` (a new message with a countdown,
  then ack) so the message comes back when that claim would expire;
- DEAD_LETTER: the attempt lost its worker too often; the task was FAILED in the
  database and the message is rejected without requeue into ``<queue>.dlq``.

A worker process that dies mid-task (kill -9, OOM) never acks: the broker redelivers the
message (the connection closed) or Celery's parent requeues it (a child died).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery, signals
from celery.exceptions import Reject

from core.db import make_engine
from core.objects import open_store
from core.serving import write_ready_file
from core.tasks import (
    AttemptStore,
    BrokerSettings,
    OutboxItem,
    celery_task_name,
    configure_celery,
    declare_topology,
    publish_run,
)
from core.tasks._broker import events_exchange
from workers._cache_reader import CacheReader, CacheSettings
from workers._config import WorkerConfig
from workers._context import WorkSettings
from workers._execute import Runtime, Verdict, execute
from workers._multiprocess import WorkerMetrics
from workers._notify import Notifier
from workers._outputs import OutputStore
from workers._registry import Limits, Registration, check_registry, load_registry, with_limits
from workers._rule_sets import RuleSets

log = logging.getLogger(__name__)

config = WorkerConfig.from_env()
settings = BrokerSettings(
    url=config.broker_url, queue=config.task_queue, events_exchange=config.task_events_exchange
)
# The built-in kinds plus those of AGENTIC_TASK_KIND_MODULES; checked before consuming.
kinds = with_limits(
    load_registry(config.task_kind_modules),
    {
        name: Limits(soft_seconds=soft, hard_seconds=hard, memory_mib=memory)
        for name, soft, hard, memory in config.task_limits
    },
)
app = Celery("agentic")
configure_celery(app, settings)
app.conf.update(worker_concurrency=config.concurrency, worker_pool="prefork")

_INFRA_RETRY_SECONDS = 2.0
_REQUEUE_PAUSE_SECONDS = 1.0
# Notifications are hints published off the task's path (see workers._notify): a broker
# outage costs a running task nothing, not a reconnect attempt per progress report.
_notifier = Notifier(config.broker_url, events_exchange(settings.events_exchange))
_runtime: tuple[int, Runtime] | None = None
# The cache sidecar of rule-set reads (TaskContext.rule_sets); its channel opens in each pool
# process, on first use.
_rule_set_cache = CacheSettings(
    address=config.cache_address,
    timeout_seconds=config.cache_timeout_seconds,
    server_ca_file=config.cache_server_ca_file,
    client_cert_file=config.cache_client_cert_file,
    client_key_file=config.cache_client_key_file,
    server_name=config.cache_server_name,
)
_runtime_lock = threading.Lock()
_metrics: WorkerMetrics | None = None


def serve_metrics(directory: Path) -> WorkerMetrics:
    """Serve the pool's metrics (multiprocess files in ``directory``) on the configured
    address from this, the main process; ``python -m workers`` calls it before the pool
    forks (see ``workers._multiprocess``)."""
    global _metrics
    _metrics = WorkerMetrics(config.metrics_address, directory)
    return _metrics


def _due(eta: Any) -> datetime | None:
    """The message's due time (Celery's ``eta``, set by a countdown), UTC; None if none."""
    if not eta:
        return None
    due = eta if isinstance(eta, datetime) else datetime.fromisoformat(str(eta))
    return due if due.tzinfo else due.replace(tzinfo=UTC)


def _publish(item: OutboxItem) -> bool:
    try:
        with app.producer_or_acquire() as producer:
            publish_run(app, producer, settings, item)
    except Exception:
        log.warning("publish of task %s not confirmed; the relay will", item.task_id, exc_info=True)
        return False
    return True


def runtime() -> Runtime:
    """This process's runtime, built on first use after the fork (engines do not fork)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime[0] != os.getpid():
            engine = make_engine(config.database_url, pool_size=config.db_pool_size)
            objects = open_store(config.object_store_url)
            cache = CacheReader(_rule_set_cache)
            _runtime = (
                os.getpid(),
                Runtime(
                    store=AttemptStore(engine),
                    lease_seconds=config.claim_lease_seconds,
                    cancel_grace_seconds=config.cancel_grace_seconds,
                    max_deliveries=config.max_deliveries,
                    notify=_notifier.notify,
                    publish=_publish,
                    objects=objects,
                    outputs=OutputStore(engine, objects),
                    database=engine,
                    rule_sets=RuleSets(engine, cache),
                    cache=cache,
                    work=WorkSettings(
                        duckdb_memory_limit_mib=config.duckdb_memory_limit_mib,
                        duckdb_threads=config.duckdb_threads,
                        directory=config.work_directory,
                        backup=config.backup,
                        retention_task_max_age_seconds=config.retention_task_max_age_seconds,
                    ),
                ),
            )
        return _runtime[1]


def _come_back_later(task: Any, countdown_seconds: float) -> None:
    """Ack this message after publishing a copy due in ``countdown_seconds``.

    Celery dead-letters the message (Reject without requeue) when the copy cannot be
    published; that would strand the task, so the message is requeued instead, after a
    bounded pause that keeps a broker or database outage from becoming a hot loop.
    """
    try:
        task.retry(countdown=countdown_seconds, max_retries=None)  # raises Retry when sent
    except Reject as exc:
        log.warning("could not re-publish %s; requeueing it", task.request.id)
        time.sleep(_REQUEUE_PAUSE_SECONDS)
        raise Reject(exc.reason, requeue=True) from None


def _register(kind: int, registration: Registration[Any, Any]) -> None:
    def run(self: Any, task_id: str, attempt: int) -> None:
        try:
            outcome = execute(
                runtime(), registration, str(task_id), int(attempt), due=_due(self.request.eta)
            )
        except Exception:
            # Our own plumbing failed (database or broker down), not the task: the default
            # (ack on failure) would lose the message. Try again a little later.
            log.exception("task %s attempt %s: infrastructure failure", task_id, attempt)
            _come_back_later(self, _INFRA_RETRY_SECONDS)
            return
        if outcome.verdict is Verdict.LATER:
            _come_back_later(self, outcome.countdown_seconds)
        if outcome.verdict is Verdict.DEAD_LETTER:
            raise Reject("attempt keeps losing its worker", requeue=False)

    run.__name__ = f"run_{celery_task_name(kind).rsplit('.', 1)[1]}"
    run.__doc__ = f"Run one attempt of a {celery_task_name(kind)} task."
    app.task(
        name=celery_task_name(kind),
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        max_retries=None,
        soft_time_limit=registration.limits.soft_seconds,
        time_limit=registration.limits.celery_hard_seconds,
        typing=False,
    )(run)


for _kind, _registration in kinds.items():
    _register(_kind, _registration)


def _on_worker_init(**_: Any) -> None:
    check_registry(
        kinds,
        consumer_timeout_seconds=config.consumer_timeout_seconds,
        claim_lease_seconds=config.claim_lease_seconds,
    )
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
        declare_topology(connection, settings)


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    log.info("worker consuming %s", settings.queue)
    if _metrics is not None:
        _metrics.consuming(str(getattr(sender, "hostname", "") or config.worker_name))
    if config.ready_file:
        write_ready_file(
            config.ready_file, pid=os.getpid(), metrics_port=_metrics and _metrics.port
        )


signals.worker_init.connect(_on_worker_init, weak=False)
signals.worker_ready.connect(_on_worker_ready, weak=False)

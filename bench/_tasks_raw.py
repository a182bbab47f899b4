"""The raw baseline of the task benchmark: a minimal Celery app, the pipeline's settings.

``make_app`` builds a Celery app with exactly the reliability settings of the pipeline
(``core.tasks.configure_celery``: durable classic priority queue with its dead-letter
arguments, persistent messages, publisher confirms, JSON only, no result backend, acks
late, reject on worker lost, prefetch 1) and one task that does nothing. None of the
pipeline's logic is in it: no database, no claim, no events, no outbox.

``python -m bench._tasks_raw`` runs that app as a prefork worker, configured like
``python -m workers`` from ``AGENTIC_BROKER_URL``, ``AGENTIC_TASK_QUEUE``,
``AGENTIC_WORKER_CONCURRENCY`` and ``AGENTIC_READY_FILE`` (the test stack's
``start_worker(command=...)`` passes them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery, signals

from core.tasks import BrokerSettings, configure_celery, declare_topology

__all__ = ["NOOP_TASK", "declare", "make_app", "publish", "publish_noop", "serve"]

NOOP_TASK = "bench.raw.noop"
_PUBLISH_TIMEOUT_SECONDS = 5.0


def _noop(task_id: str, attempt: int) -> None:
    """Do nothing: what is left is Celery and the broker."""


def make_app(broker_url: str, queue: str) -> Celery:
    """A Celery app on ``queue`` with the pipeline's settings and the no-op task."""
    app = Celery("bench-raw", set_as_current=False)
    configure_celery(app, _settings(broker_url, queue))
    app.conf.update(worker_pool="prefork", worker_hijack_root_logger=False)
    app.task(
        name=NOOP_TASK,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        typing=False,
    )(_noop)
    return app


def _settings(broker_url: str, queue: str) -> BrokerSettings:
    # The events exchange is declared but never used: the raw app publishes no events.
    return BrokerSettings(url=broker_url, queue=queue, events_exchange=f"{queue}.unused")


def declare(app: Celery, broker_url: str, queue: str) -> None:
    """Declare the queue (and its dead-letter queue) as the pipeline does."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
        declare_topology(connection, _settings(broker_url, queue))


def publish(app: Celery, queue: str, name: str, args: list[Any], task_id: str) -> None:
    """One confirmed publish of task ``name`` with the options the API server's
    ``publish_run`` uses (blocking; raises when the broker does not confirm)."""
    app.send_task(
        name,
        args=args,
        task_id=task_id,
        queue=queue,
        routing_key=queue,
        priority=2,
        retry=False,
        timeout=_PUBLISH_TIMEOUT_SECONDS,
        confirm_timeout=_PUBLISH_TIMEOUT_SECONDS,
    )


def publish_noop(app: Celery, queue: str, task_id: str) -> None:
    """One confirmed publish of the no-op task, with the pipeline's arguments."""
    publish(app, queue, NOOP_TASK, [task_id, 1], task_id)


def serve(make: Callable[[str, str], Celery]) -> None:
    """Run ``make(broker_url, queue)`` as a prefork worker, configured like ``python -m
    workers`` from the environment (see the module's docstring); returns when it stops."""
    broker_url = os.environ["AGENTIC_BROKER_URL"]
    queue = os.environ["AGENTIC_TASK_QUEUE"]
    concurrency = os.environ.get("AGENTIC_WORKER_CONCURRENCY", "1")
    ready_file = os.environ.get("AGENTIC_READY_FILE", "")
    app = make(broker_url, queue)

    def on_init(**_: Any) -> None:
        declare(app, broker_url, queue)

    def on_ready(**_: Any) -> None:
        if ready_file:
            path = Path(ready_file)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid()}))
            os.replace(tmp, path)

    signals.worker_init.connect(on_init, weak=False)
    signals.worker_ready.connect(on_ready, weak=False)
    # The same command line as ``python -m workers`` (log level included: INFO logs two
    # lines per task there too).
    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            f"--queues={queue}",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


if __name__ == "__main__":
    serve(make_app)

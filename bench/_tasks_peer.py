"""The peer of the task benchmark: Celery with durable status "the usual way" (issue 17).

What a team writes when it wants task status that survives a restart without this
pipeline: Celery's SQLAlchemy database result backend on the same PostgreSQL, with
``task_track_started`` (a STARTED row before the task runs, SUCCESS after), acks late,
prefetch 1, and the broker guarantees of the pipeline (``bench._tasks_raw.make_app``:
durable queue, persistent messages, publisher confirms). Status is read by polling
``AsyncResult``, which is what the seeds' clients do ("ask every few seconds").

Two tasks: ``NOOP_TASK`` (the drain row) and ``SLEEP_TASK`` (the status row: it runs for
a given time so that its end falls at a random moment of a poller's period). The
backend's session runs in UTC (``timezone=UTC`` on every connection), so the
``date_done`` it writes reads back as the UTC time of the state change.

``python -m bench._tasks_peer`` runs the app as a prefork worker, like
``python -m bench._tasks_raw`` (``DATABASE_URL`` names the backend's database).
"""

from __future__ import annotations

import os
import time

from celery import Celery

from bench._tasks_raw import make_app, serve

__all__ = ["NOOP_TASK", "SLEEP_TASK", "make_peer_app", "result_url"]

NOOP_TASK = "bench.peer.noop"
SLEEP_TASK = "bench.peer.sleep"


def _noop() -> None:
    """Do nothing: what is left is Celery, the broker and the two status rows."""


def _sleep(seconds: float) -> None:
    """Run for ``seconds``."""
    time.sleep(seconds)


def result_url(database_url: str) -> str:
    """The result backend URL of a SQLAlchemy database URL (``db+`` in front)."""
    return f"db+{database_url}"


def make_peer_app(broker_url: str, queue: str, database_url: str) -> Celery:
    """The raw app's broker settings plus durable status in ``database_url``."""
    app = make_app(broker_url, queue)
    app.conf.update(
        result_backend=result_url(database_url),
        result_extended=False,
        task_ignore_result=False,
        task_track_started=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        database_engine_options={"connect_args": {"options": "-c timezone=UTC"}},
        # Results are kept (the seeds read them later); the bench database is dropped.
        result_expires=None,
    )
    options = {"acks_late": True, "reject_on_worker_lost": True, "typing": False}
    app.task(name=NOOP_TASK, **options)(_noop)
    app.task(name=SLEEP_TASK, **options)(_sleep)
    return app


def _make(broker_url: str, queue: str) -> Celery:
    return make_peer_app(broker_url, queue, os.environ["DATABASE_URL"])


if __name__ == "__main__":
    serve(_make)

"""The API server's operations metrics, scraped from a real server process.

The broker figures (``celery_queue_length``, ``celery_active_consumer_count``) are compared
with ``rabbitmqctl list_queues`` on a private vhost, the broker's own command line; the job
times with the end times of task rows the test writes into the server's database, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agentic.tasks.v1 import tasks_pb2 as tpb
from agentic.tasks.v1 import tasks_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from core.tasks import JOBS, QueueFigures
from server.tasks import _ops_metrics
from server.tasks._ops_metrics import BrokerFigures
from tests._scrape import metrics_text
from tests._support import fresh_database, wait_for
from tests._task_rows import add_task
from tests.workers._stack import (
    Stack,
    outbox_task_ids,
    private_vhost,
    queue_figures,
    stack,
    submit,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    with private_vhost() as url:
        yield url


def _scrape(s: Stack) -> Samples:
    port = s.servers[-1].ready["metrics_port"]
    text = metrics_text(port)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def _start(s: Stack, **extra: str) -> tasks_pb2_grpc.TaskServiceStub:
    return s.start_server(AGENTIC_METRICS_ADDRESS="127.0.0.1:0", **extra)


def test_queue_figures_are_the_brokers(vhost: str, tmp_path: Path) -> None:
    with stack(tmp_path, vhost, f"sqlite:///{tmp_path / 'q.db'}") as s:
        client = _start(s)
        queue = s.env["AGENTIC_TASK_QUEUE"]
        dead = f"{queue}.dlq"
        made = 5
        for _ in range(made):
            submit(client, steps=1, step_millis=1, request_id=str(uuid.uuid4()))
        wait_for(
            lambda: not outbox_task_ids(s.db()), timeout=20, message="the broker to confirm all"
        )
        assert queue_figures(vhost, queue) == (made, 0)

        def exported() -> dict[str, tuple[float, float]]:
            samples = _scrape(s)
            lengths = _named(samples, "celery_queue_length")
            consumers = _named(samples, "celery_active_consumer_count")
            return {
                dict(labels)["queue_name"]: (value, consumers[labels])
                for labels, value in lengths.items()
            }

        # The figures are refreshed every 5 s: wait for an answer given after the publishes.
        wait_for(
            lambda: exported().get(queue) == (made, 0),
            timeout=15,
            message=f"celery_queue_length{{queue_name={queue}}} to reach {made}",
        )
        figures = exported()
        assert set(figures) == {queue, dead}
        assert figures[queue] == queue_figures(vhost, queue) == (made, 0)
        assert figures[dead] == queue_figures(vhost, dead)
        assert _named(_scrape(s), "agentic_broker_figures_up") == {(): 1.0}


def test_a_broker_that_does_not_answer_exports_no_queue_figures(vhost: str, tmp_path: Path) -> None:
    # A port held bound but not listening refuses connections.
    with (
        stack(tmp_path, vhost, f"sqlite:///{tmp_path / 'down.db'}") as s,
        socket.socket() as held,
    ):
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        _start(s, AGENTIC_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{port}//")

        def up() -> dict[tuple[tuple[str, str], ...], float]:
            return _named(_scrape(s), "agentic_broker_figures_up")

        wait_for(lambda: up() == {(): 0.0}, timeout=10, message="agentic_broker_figures_up 0")
        samples = _scrape(s)
        assert _named(samples, "celery_queue_length") == {}
        assert _named(samples, "celery_active_consumer_count") == {}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_job_times_are_the_newest_end_times_of_their_kinds(
    backend: str, vhost: str, tmp_path: Path
) -> None:
    with fresh_database(backend, tmp_path) as url, stack(tmp_path, vhost, url) as s:
        _start(s)  # migrates the database
        samples = _scrape(s)
        for name in (
            "agentic_backup_last_success_timestamp_seconds",
            "agentic_job_last_success_timestamp_seconds",
            "agentic_job_last_failure_timestamp_seconds",
        ):
            assert _named(samples, name) == {}, f"{name} without any task"
        base = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
        rows = [  # (kind, state, end); a cancelled task and other kinds must not count
            (tpb.TASK_KIND_BACKUP, tpb.TASK_STATE_SUCCEEDED, base + timedelta(hours=1)),
            (tpb.TASK_KIND_BACKUP, tpb.TASK_STATE_SUCCEEDED, base + timedelta(hours=25)),
            (tpb.TASK_KIND_BACKUP, tpb.TASK_STATE_FAILED, base + timedelta(hours=49)),
            (tpb.TASK_KIND_RETENTION, tpb.TASK_STATE_FAILED, base + timedelta(hours=2)),
            (tpb.TASK_KIND_PROBE, tpb.TASK_STATE_SUCCEEDED, base + timedelta(minutes=7)),
            (tpb.TASK_KIND_PROBE, tpb.TASK_STATE_CANCELLED, base + timedelta(hours=90)),
            (tpb.TASK_KIND_VERIFY_ARTIFACT, tpb.TASK_STATE_SUCCEEDED, base + timedelta(days=9)),
        ]
        engine = s.db()
        for kind, state, end in rows:
            add_task(engine, kind=kind, state=state, created=base, started=base, ended=end)
        # The reference: the newest end per (kind, state), computed from the rows written.
        newest: dict[tuple[int, int], float] = {}
        for kind, state, end in rows:
            key = (kind, state)
            newest[key] = max(newest.get(key, 0.0), end.timestamp())
        expected_success = {
            (("job", name),): newest[(job.kind, tpb.TASK_STATE_SUCCEEDED)]
            for name, job in JOBS.items()
            if (job.kind, tpb.TASK_STATE_SUCCEEDED) in newest
        }
        expected_failure = {
            (("job", name),): newest[(job.kind, tpb.TASK_STATE_FAILED)]
            for name, job in JOBS.items()
            if (job.kind, tpb.TASK_STATE_FAILED) in newest
        }
        assert set(expected_success) == {(("job", "backup"),), (("job", "health_probe"),)}

        wait_for(
            lambda: (
                _named(_scrape(s), "agentic_job_last_success_timestamp_seconds") == expected_success
            ),
            timeout=10,
            message="the job times to show the rows written",
        )
        samples = _scrape(s)
        assert _named(samples, "agentic_job_last_failure_timestamp_seconds") == expected_failure
        assert _named(samples, "agentic_backup_last_success_timestamp_seconds") == {
            (): newest[(tpb.TASK_KIND_BACKUP, tpb.TASK_STATE_SUCCEEDED)]
        }


# --- BrokerFigures' rules on partial, failed and stale answers (in process) -------------


def _families(collector: BrokerFigures) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in collector.collect()
    }


def test_figures_are_exported_only_when_every_queue_answered() -> None:
    answers = {
        "all": [QueueFigures("q", 3, 1), QueueFigures("q.dlq", 2, 0)],
        "partial": [QueueFigures("q", 3, 1), QueueFigures("q.dlq", error="404 NOT_FOUND")],
    }
    choice = ["all"]
    figures = BrokerFigures("amqp://unused", ("q", "q.dlq"), ask=lambda _u, _q: answers[choice[0]])
    assert _families(figures) == {"agentic_broker_figures_up": [({}, 0.0)]}, "before any answer"
    figures.refresh()
    assert _families(figures) == {
        "agentic_broker_figures_up": [({}, 1.0)],
        "celery_queue_length": [({"queue_name": "q"}, 3.0), ({"queue_name": "q.dlq"}, 2.0)],
        "celery_active_consumer_count": [
            ({"queue_name": "q"}, 1.0),
            ({"queue_name": "q.dlq"}, 0.0),
        ],
    }
    choice[0] = "partial"
    figures.refresh()
    assert _families(figures) == {"agentic_broker_figures_up": [({}, 0.0)]}


def test_a_failing_or_stale_refresh_exports_no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_url: str, _queues: Sequence[str]) -> list[QueueFigures]:
        raise OSError("connection reset")

    figures = BrokerFigures("amqp://unused", ("q",), ask=fail)
    figures.refresh()
    assert _families(figures) == {"agentic_broker_figures_up": [({}, 0.0)]}
    fresh = BrokerFigures("amqp://unused", ("q",), ask=lambda _u, _q: [QueueFigures("q", 1, 1)])
    fresh.refresh()
    assert _families(fresh)["agentic_broker_figures_up"] == [({}, 1.0)]
    monkeypatch.setattr(_ops_metrics, "MAX_AGE_SECONDS", -1.0)  # every answer is too old
    assert _families(fresh) == {"agentic_broker_figures_up": [({}, 0.0)]}

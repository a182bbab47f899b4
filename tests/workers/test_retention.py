"""The retention kind end to end: SubmitRetention over gRPC, a real worker process deletes
exactly what is old enough, in batches, while another thread keeps submitting probes.

The data is made through the API where it can be (projects, artifacts, uploads, probe
tasks run by the worker) and aged in the database where only time could do it (a task's
``update_time``, an upload's ``expire_time``). Every expectation is computed here from
what was made: the tasks and events that must go and those that must stay, the bytes
that must leave the object store (the files under its directory) and those that must
still read back. Both SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import maintenance_pb2, tasks_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from google.protobuf import duration_pb2
from sqlalchemy import Engine, select, update

from core.db import (
    ArtifactRow,
    ArtifactWorkProductRow,
    EventOutboxRow,
    TaskEventRow,
    TaskRow,
)
from core.events import DomainEvent
from core.objects import object_key
from tests._identity import ADMIN, authorized_channel
from tests._status import rich_status
from tests._task_rows import add_task
from tests.server.artifacts._bytestream import create_upload, download, upload, write_requests
from tests.workers._stack import TIMEOUT, Stack, private_vhost, stack, submit, watch_to_end
from workers._config import ConfigError, WorkerConfig

DAY = timedelta(days=1)
MAX_AGE = 10 * DAY  # the worker's AGENTIC_RETENTION_TASK_MAX_AGE in these tests
BATCH = 7
TERMINAL = (pb.TASK_STATE_SUCCEEDED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED)


@pytest.fixture
def pipeline(tmp_path: Path, private_database_url: str) -> Iterator[Stack]:
    """A server and a worker of two processes (retention and probes run side by side),
    the worker's task age 10 days: a default of 30 would keep the 11-day-old tasks."""
    with (
        private_vhost() as broker,
        stack(tmp_path, broker, private_database_url, AGENTIC_RETENTION_TASK_MAX_AGE="10d") as s,
    ):
        s.start_server()
        s.start_worker(concurrency=2)
        yield s


@pytest.fixture(scope="module")
def api_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server alone: the spec's bounds are checked before anything is queued."""
    workdir = tmp_path_factory.mktemp("retention-api")
    with private_vhost() as broker, stack(workdir, broker, f"sqlite:///{workdir / 't.db'}") as s:
        s.start_server()
        yield s


def _insert_task(engine: Engine, *, state: int, updated: datetime, events: int) -> str:
    """A task row (and its events); a RUNNING one claimed far ahead, so no watchdog takes
    it over."""
    task_id = add_task(engine, state=state, created=updated, events=events)
    if state == pb.TASK_STATE_RUNNING:
        with engine.begin() as connection:
            connection.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id)
                .values(claim_worker="elsewhere", claim_expire_time=updated + 400 * DAY)
            )
    return task_id


def _age(engine: Engine, ids: set[str], when: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(update(TaskRow).where(TaskRow.id.in_(ids)).values(update_time=when))


def _tasks(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(select(TaskRow.id)))


def _events(engine: Engine) -> Counter[str]:
    with engine.connect() as connection:
        return Counter(connection.scalars(select(TaskEventRow.task_id)))


def _files(root: Path) -> set[str]:
    """Every file under the object store's directory, relative to it."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _partial(
    artifacts: artifacts_pb2_grpc.ArtifactServiceStub, project: str, data: bytes
) -> apb.CreateUploadResponse:
    """An upload with ``data`` written and committed, not finished."""
    created = create_upload(artifacts, project, name="partial.csv", size=len(data) * 2)
    artifacts.Write(
        write_requests(io.BytesIO(data), created.upload_name, finish=False), timeout=TIMEOUT
    )
    return created


def _read(artifacts: artifacts_pb2_grpc.ArtifactServiceStub, artifact_id: str) -> bytes:
    out = io.BytesIO()
    download(artifacts, artifact_id, out)
    return out.getvalue()


class _Prober(threading.Thread):
    """Submits probes until stopped; what it submitted, when each call returned, and any
    failure (a submit must never fail while retention runs)."""

    def __init__(self, tasks: tasks_pb2_grpc.TaskServiceStub) -> None:
        super().__init__(daemon=True)
        self._tasks = tasks
        self.stop = threading.Event()
        self.submitted: list[tuple[str, datetime]] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        # Bounded: at most 2,000 submits, and a test waits for it with a timeout.
        for _ in range(2000):
            if self.stop.is_set():
                return
            try:
                task = submit(self._tasks, steps=1, step_millis=1, owner=ADMIN)
            except BaseException as exc:  # recorded, the test fails on it
                self.errors.append(exc)
                return
            self.submitted.append((task.id, datetime.now(UTC)))


def test_retention_deletes_exactly_what_is_old_enough_in_batches_while_submits_continue(
    pipeline: Stack, tmp_path: Path
) -> None:
    engine = pipeline.db()
    channel = authorized_channel(pipeline.servers[0].address)
    tasks = tasks_pb2_grpc.TaskServiceStub(channel)
    projects = projects_pb2_grpc.ProjectServiceStub(channel)
    artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
    now = datetime.now(UTC)

    # --- tasks: real probes (events written by the worker), aged; rows of every state ---
    ran = [submit(tasks, steps=2, step_millis=1, owner=ADMIN).id for _ in range(6)]
    ran += [submit(tasks, steps=2, step_millis=1, fail_at_step=1, owner=ADMIN).id]
    for task_id in ran:
        assert watch_to_end(tasks, task_id)[-1].task.state in TERMINAL
    old_ran, young_ran = set(ran[:4]), set(ran[4:])
    _age(engine, old_ran, now - MAX_AGE - DAY)
    _age(engine, young_ran, now - MAX_AGE + DAY)
    old_rows = {
        _insert_task(engine, state=TERMINAL[i % 3], updated=now - MAX_AGE - i * DAY, events=i % 4)
        for i in range(1, 50)
    }
    young_rows = {
        _insert_task(engine, state=s, updated=now - MAX_AGE + timedelta(hours=1), events=2)
        for s in TERMINAL
    }
    old_live = {
        _insert_task(engine, state=s, updated=now - 100 * DAY, events=3)
        for s in (pb.TASK_STATE_RUNNING, pb.TASK_STATE_RETRY_SCHEDULED)
    }
    doomed = old_ran | old_rows
    before = _tasks(engine)
    assert doomed < before
    events_before = _events(engine)

    # --- artifacts: a live project's, a deleted project's, expired and live uploads ---
    def new_project(name: str) -> str:
        made = projects.CreateProject(
            ppb.CreateProjectRequest(project=ppb.Project(name=name)), timeout=TIMEOUT
        )
        return str(made.project.id)

    live, dead = new_project("kept"), new_project("deleted")
    source = tmp_path / "data.csv"
    source.write_bytes(b"a,b\n" + os.urandom(3000).hex().encode())
    kept_ready = upload(artifacts, live, source)
    kept_upload = _partial(artifacts, live, b"x" * 1000)
    expired = _partial(artifacts, live, b"y" * 1500)
    orphans = [upload(artifacts, dead, source, name=f"o{i}.csv") for i in range(2)]
    document = tmp_path / "plan.pdf"
    document.write_bytes(b"%PDF-1.4 " + os.urandom(700))
    doc_upload = artifacts.CreateUpload(
        apb.CreateUploadRequest(
            project_id=dead,
            name="plan.pdf",
            kind=apb.ARTIFACT_KIND_DOCUMENT,
            content_type="application/pdf",
            size_bytes=document.stat().st_size,
            work_products=["08-52", "17-00"],
        ),
        timeout=TIMEOUT,
    )
    with document.open("rb") as handle:
        artifacts.Write(write_requests(handle, doc_upload.upload_name), timeout=TIMEOUT)
    orphan_upload = _partial(artifacts, dead, b"z" * 800)
    orphan_ids = {a.id for a in orphans} | {
        doc_upload.artifact.id,
        orphan_upload.artifact.id,
    }
    etag = projects.GetProject(ppb.GetProjectRequest(id=dead), timeout=TIMEOUT).project.etag
    projects.DeleteProject(ppb.DeleteProjectRequest(id=dead, etag=etag), timeout=TIMEOUT)
    with engine.begin() as connection:
        connection.execute(
            update(ArtifactRow)
            .where(ArtifactRow.id == expired.artifact.id)
            .values(expire_time=now - timedelta(minutes=1))
        )
        outbox_before = set(connection.scalars(select(EventOutboxRow.id)))
        artifact_ids_before = set(connection.scalars(select(ArtifactRow.id)))
    root = Path(pipeline.env["AGENTIC_OBJECT_STORE_URL"].removeprefix("file://"))
    files_before = _files(root)
    key = {a: object_key(p, a) for p, a in _owners(engine)}
    gone_files = {key[a] for a in orphan_ids - {orphan_upload.artifact.id}} | {
        f".staging/{key[orphan_upload.artifact.id]}",
        f".staging/{key[expired.artifact.id]}",
    }
    assert gone_files < files_before, (gone_files, files_before)
    freed = 2 * source.stat().st_size + document.stat().st_size + 800 + 1500

    # --- run retention while probes keep coming ---
    prober = _Prober(tasks)
    prober.start()
    try:
        deadline = time.monotonic() + 30
        while len(prober.submitted) < 3 and not prober.errors and time.monotonic() < deadline:
            time.sleep(0.01)  # until submits are flowing (bounded)
        request = pb.SubmitRetentionRequest(
            request_id=str(uuid.uuid4()),
            retention=maintenance_pb2.RetentionSpec(batch_size=BATCH),
        )
        retention = tasks.SubmitRetention(request, timeout=TIMEOUT).task
        watched = watch_to_end(tasks, retention.id, timeout=120)
    finally:
        prober.stop.set()
        prober.join(timeout=30)
    assert not prober.is_alive(), "the prober did not stop"
    assert not prober.errors, prober.errors
    final = watched[-1].task
    assert final.state == pb.TASK_STATE_SUCCEEDED, final.error
    result = final.retention_result

    # Submits went on while it ran.
    start, end = final.start_time.ToDatetime(UTC), final.end_time.ToDatetime(UTC)
    during = [t for t, at in prober.submitted if start <= at <= end]
    assert during, f"no submit returned while retention ran ({start} .. {end})"

    # Exactly the old terminal tasks are gone, with exactly their events.
    after = _tasks(engine)
    assert after & doomed == set(), "old terminal tasks left"
    assert before - doomed <= after, "a young or unfinished task was deleted"
    assert {t for t, _ in prober.submitted} <= after, "a probe submitted meanwhile was deleted"
    assert after - before == {t for t, _ in prober.submitted} | {retention.id}
    events_after = _events(engine)
    assert set(events_after) & doomed == set(), "events of deleted tasks left"
    for task_id in young_rows | young_ran | old_live:
        assert events_after[task_id] == events_before[task_id], task_id
    assert result.tasks_deleted == len(doomed)
    assert result.task_events_deleted == sum(events_before[t] for t in doomed)
    cutoff = result.task_cutoff.ToDatetime(UTC)
    assert abs(cutoff - (start - MAX_AGE)) < timedelta(minutes=1), (cutoff, start)

    # Orphans and the expired upload are gone, bytes and rows; the rest stays readable.
    with engine.connect() as connection:
        artifact_ids_after = set(connection.scalars(select(ArtifactRow.id)))
        work_products = set(connection.scalars(select(ArtifactWorkProductRow.artifact_id)))
        states = dict(connection.execute(select(ArtifactRow.id, ArtifactRow.state)).all())
        new_events = list(
            connection.scalars(
                select(EventOutboxRow.body).where(EventOutboxRow.id.not_in(outbox_before))
            )
        )
    assert artifact_ids_after == artifact_ids_before - orphan_ids
    assert doc_upload.artifact.id not in work_products
    assert states[expired.artifact.id] == "failed"
    assert states[kept_upload.artifact.id] == "uploading"
    assert _files(root) == files_before - gone_files
    assert _read(artifacts, kept_ready.id) == source.read_bytes()
    status = artifacts.QueryWriteStatus(
        apb.QueryWriteStatusRequest(resource_name=kept_upload.upload_name), timeout=TIMEOUT
    )
    assert status.committed_size == 1000
    assert result.orphan_artifacts_deleted == len(orphan_ids)
    assert result.uploads_expired == 1
    assert result.bytes_freed == freed
    assert result.failures == 0
    # One event each, in the outbox (this stack's servers relay none): what the caches of
    # every replica drop the artifacts by.
    written = Counter((e.type.value, e.key) for e in (DomainEvent.from_json(b) for b in new_events))
    assert written == Counter(
        [("artifact.deleted", a) for a in orphan_ids] + [("artifact.updated", expired.artifact.id)]
    )

    # In batches: tasks of 7 (and the last partial one), orphans of 7 (one), one of uploads.
    task_batches = -(-len(doomed) // BATCH)
    assert result.batches == task_batches + 1 + 1, result
    progress = [e.progress.message for e in watched if e.HasField("progress")]
    assert sum("tasks and" in m for m in progress) == task_batches, progress

    # A second run finds nothing left to do.
    again = tasks.SubmitRetention(
        pb.SubmitRetentionRequest(
            request_id=str(uuid.uuid4()),
            retention=maintenance_pb2.RetentionSpec(batch_size=BATCH),
        ),
        timeout=TIMEOUT,
    ).task
    second = watch_to_end(tasks, again.id, timeout=60)[-1].task
    assert second.state == pb.TASK_STATE_SUCCEEDED, second.error
    nothing = second.retention_result
    assert (nothing.tasks_deleted, nothing.orphan_artifacts_deleted, nothing.uploads_expired) == (
        0,
        0,
        0,
    )
    assert hashlib.sha256(_read(artifacts, kept_ready.id)).hexdigest() == kept_ready.sha256
    channel.close()


def _owners(engine: Engine) -> list[tuple[str, str]]:
    """(project id, artifact id) of every artifact row."""
    with engine.connect() as connection:
        rows = connection.execute(select(ArtifactRow.project_id, ArtifactRow.id)).all()
    return [(p, a) for p, a in rows]


@pytest.mark.parametrize(
    "seconds",
    [7 * 86400 - 1, 60, 3650 * 86400 + 1],
)
def test_a_task_age_outside_7_days_to_10_years_is_invalid(api_only: Stack, seconds: int) -> None:
    channel = authorized_channel(api_only.servers[0].address)
    tasks = tasks_pb2_grpc.TaskServiceStub(channel)
    request = pb.SubmitRetentionRequest(
        request_id=str(uuid.uuid4()),
        retention=maintenance_pb2.RetentionSpec(
            task_max_age=duration_pb2.Duration(seconds=seconds)
        ),
    )
    with pytest.raises(grpc.RpcError) as caught:
        tasks.SubmitRetention(request, timeout=TIMEOUT)
    channel.close()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = list(rich_status(caught.value).violations)
    assert fields == ["retention.task_max_age"], fields


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(None, 30 * 86400), ("7d", 7 * 86400), ("720h", 30 * 86400), ("6d", None), ("11y", None)],
)
def test_the_worker_setting_takes_durations_within_the_spec_bounds(
    raw: str | None, seconds: int | None
) -> None:
    env = {} if raw is None else {"AGENTIC_RETENTION_TASK_MAX_AGE": raw}
    if seconds is None:
        with pytest.raises(ConfigError, match="AGENTIC_RETENTION_TASK_MAX_AGE"):
            WorkerConfig.from_env(env)
    else:
        assert WorkerConfig.from_env(env).retention_task_max_age_seconds == seconds


def test_a_cancelled_run_stops_between_batches_and_keeps_what_it_deleted(
    pipeline: Stack,
) -> None:
    engine = pipeline.db()
    channel = authorized_channel(pipeline.servers[0].address)
    tasks = tasks_pb2_grpc.TaskServiceStub(channel)
    old = datetime.now(UTC) - MAX_AGE - DAY
    doomed = {
        _insert_task(engine, state=pb.TASK_STATE_SUCCEEDED, updated=old, events=1)
        for _ in range(400)
    }
    request = pb.SubmitRetentionRequest(
        request_id=str(uuid.uuid4()), retention=maintenance_pb2.RetentionSpec(batch_size=1)
    )
    task = tasks.SubmitRetention(request, timeout=TIMEOUT).task
    # Cancel at the first batch reported: 400 batches of one task are far from done.
    progress = 0
    for item in tasks.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=60):
        if item.HasField("event") and "tasks and" in item.event.progress.message:
            tasks.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=TIMEOUT)
            progress = item.event.sequence
            break
    assert progress, "no batch was reported"
    final = watch_to_end(tasks, task.id, after=progress, timeout=60)[-1].task
    channel.close()
    assert final.state == pb.TASK_STATE_CANCELLED, final
    left = _tasks(engine) & doomed
    assert 0 < len(left) < len(doomed), len(left)
    # Whole batches: a deleted task took its event along, a kept one kept it.
    assert set(_events(engine)) & doomed == left

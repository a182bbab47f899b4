"""The batched deletions the retention kind is made of, on a real SQLite database and a
real file object store: a stop between batches keeps what is done and nothing more, a
store error is counted and left for the next run, which finishes it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from sqlalchemy import Engine, insert, select

from core.artifacts import DELETING, READY, delete_orphans, sweep
from core.db import ArtifactRow, EventOutboxRow, ProjectRow, TaskRow, make_engine, migrate
from core.objects import ObjectStore, ObjectStoreError, object_key, open_store
from core.tasks import TERMINAL_STATES, PurgeResult, purge_tasks
from tests._task_rows import add_task

NOW = datetime.now(UTC)


class _Stop(Exception):
    pass


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    made = make_engine(f"sqlite:///{tmp_path / 'r.db'}", pool_size=1)
    migrate(made)
    return made


def _task(engine: Engine, state: int, updated: datetime) -> str:
    return add_task(engine, state=state, created=updated, events=0)


def test_a_stop_after_a_batch_keeps_that_batch_done_and_the_rest_untouched(
    engine: Engine,
) -> None:
    old = [_task(engine, pb.TASK_STATE_SUCCEEDED, NOW - timedelta(days=9)) for _ in range(10)]
    # Exactly at the cutoff is not older than it: kept.
    edge = _task(engine, pb.TASK_STATE_FAILED, NOW - timedelta(days=8))
    seen: list[PurgeResult] = []

    def stop_after_first(done: PurgeResult) -> None:
        seen.append(done)
        raise _Stop

    with pytest.raises(_Stop):
        purge_tasks(
            engine,
            older_than=timedelta(days=8),
            states=TERMINAL_STATES,
            batch_size=4,
            now=NOW,
            after_batch=stop_after_first,
        )
    assert seen == [PurgeResult(tasks=4, events=0, batches=1)]
    with engine.connect() as connection:
        left = set(connection.scalars(select(TaskRow.id)))
    assert len(left & set(old)) == 6
    assert edge in left
    rest = purge_tasks(
        engine, older_than=timedelta(days=8), states=TERMINAL_STATES, batch_size=4, now=NOW
    )
    assert rest == PurgeResult(tasks=6, events=0, batches=2)  # 4 + 2
    with engine.connect() as connection:
        assert set(connection.scalars(select(TaskRow.id))) == {edge}


class _Flaky:
    """A file store whose ``delete`` fails for the keys in ``broken``."""

    def __init__(self, store: ObjectStore, broken: set[str]) -> None:
        self._store = store
        self.broken = broken

    def delete(self, key: str) -> None:
        if key in self.broken:
            raise ObjectStoreError(f"{key}: the store is down")
        self._store.delete(key)

    def abort_upload(self, key: str, state: str) -> None:
        self._store.abort_upload(key, state)


def _artifact(engine: Engine, store: ObjectStore, project_id: str, size: int) -> str:
    artifact_id = str(uuid.uuid4())
    key = object_key(project_id, artifact_id)
    writer = store.open_writer(key, 0, store.begin_upload(key))
    writer.write(b"x" * size)
    writer.finish()
    with engine.begin() as connection:
        connection.execute(
            insert(ArtifactRow),
            {
                "id": artifact_id,
                "project_id": project_id,
                "owner_id": "t",
                "name": "a.csv",
                "kind": "dataset",
                "content_type": "text/csv",
                "format": "csv",
                "state": READY,
                "size_bytes": size,
                "object_key": key,
                "upload_id": str(uuid.uuid4()),
                "create_time": NOW,
                "update_time": NOW,
            },
        )
    return artifact_id


def test_a_store_error_is_counted_and_the_next_run_finishes_the_deletion(
    engine: Engine, tmp_path: Path
) -> None:
    store = open_store((tmp_path / "objects").as_uri())
    live = str(uuid.uuid4())
    with engine.begin() as connection:
        connection.execute(
            insert(ProjectRow),
            {"id": live, "name": "p", "owner_id": "t", "create_time": NOW, "update_time": NOW},
        )
    kept = _artifact(engine, store, live, 10)
    gone = str(uuid.uuid4())
    orphans = [_artifact(engine, store, gone, 100 + i) for i in range(5)]
    stuck = orphans[2]
    flaky = _Flaky(store, {object_key(gone, stuck)})

    report = delete_orphans(engine, flaky, batch_size=2)  # type: ignore[arg-type]
    assert (report.deleted, report.failures, report.batches) == (4, 1, 3)
    assert report.bytes_freed == sum(100 + i for i in range(5)) - (100 + 2)
    with engine.connect() as connection:
        states = dict(connection.execute(select(ArtifactRow.id, ArtifactRow.state)).all())
        events = list(connection.scalars(select(EventOutboxRow.event_type)))
    assert states == {kept: READY, stuck: DELETING}
    assert events == ["artifact.deleted"] * 5
    assert store.size(object_key(live, kept)) == 10
    assert store.size(object_key(gone, stuck)) == 102

    # A row left deleting is not an orphan to pick again; the sweep finishes it once its
    # grace passed and the store answers.
    assert delete_orphans(engine, flaky, batch_size=2).deleted == 0  # type: ignore[arg-type]
    flaky.broken.clear()
    # From the clock, not NOW: the row's deletion time is the real time of the run above,
    # which may be long after this module was imported (a parallel or slow run).
    later = sweep(engine, flaky, now=datetime.now(UTC) + timedelta(minutes=10))  # type: ignore[arg-type]
    assert (later.finished_deletions, later.failures, later.bytes_freed) == (1, 0, 102)
    with engine.connect() as connection:
        assert set(connection.scalars(select(ArtifactRow.id))) == {kept}
    assert store.size(object_key(gone, stuck)) is None

"""Output artifacts (``workers._outputs``): stored whole, visible only when READY, once per slot.

On a real SQLite database and a real file store; a wrapper of the store fails writes on
purpose to show that a failed store leaves nothing visible and nothing staged.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from core.db import ArtifactRow, ArtifactWorkProductRow, EventOutboxRow, make_engine, migrate
from core.objects import ObjectStore, ObjectStoreError, UploadWriter, object_key, open_store
from core.tasks import AttemptStore
from workers._context import PermanentError, TaskContext, TransientError
from workers._outputs import Output, OutputStore, output_artifact_id

PROJECT = str(uuid.uuid4())
REPORT = Output(
    slot="report-html",
    name="profile of sales.csv",
    kind="document",
    content_type="text/html",
    work_products=("13-22", "13-04", "13-22"),
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'outputs.db'}", pool_size=2)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def objects(tmp_path: Path) -> ObjectStore:
    return open_store(f"file://{tmp_path / 'objects'}")


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / f"output-{size}.bin"
    path.write_bytes(os.urandom(size))
    return path


def _rows(engine: Engine) -> list[ArtifactRow]:
    with engine.connect() as connection:
        return list(connection.execute(select(ArtifactRow)).all())  # type: ignore[arg-type]


def _staged(objects: ObjectStore) -> list[Path]:
    root = Path(objects.url.removeprefix("file://"))
    return [p for p in (root / ".staging").rglob("*") if p.is_file()]


def test_an_output_is_stored_whole_with_its_row_and_event(
    tmp_path: Path, engine: Engine, objects: ObjectStore
) -> None:
    path = _file(tmp_path, 3 * 1024 * 1024 + 17)  # more than one 1 MiB piece, not a multiple
    task_id = str(uuid.uuid4())
    artifact_id = OutputStore(engine, objects).store(
        task_id=task_id, project_id=PROJECT, owner_id="alice", output=REPORT, path=path
    )

    assert artifact_id == output_artifact_id(task_id, REPORT.slot)
    data = path.read_bytes()
    key = object_key(PROJECT, artifact_id)
    assert b"".join(objects.read(key)) == data
    with engine.connect() as connection:
        row = connection.execute(select(ArtifactRow).where(ArtifactRow.id == artifact_id)).one()
        tags = connection.execute(
            select(ArtifactWorkProductRow.work_product)
            .where(ArtifactWorkProductRow.artifact_id == artifact_id)
            .order_by(ArtifactWorkProductRow.work_product)
        ).scalars()
        bodies = [json.loads(b) for b in connection.execute(select(EventOutboxRow.body)).scalars()]
    assert (row.state, row.size_bytes, row.sha256) == (
        "ready",
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    assert (row.project_id, row.owner_id, row.kind, row.content_type, row.object_key) == (
        PROJECT,
        "alice",
        "document",
        "text/html",
        key,
    )
    assert list(tags) == ["13-04", "13-22"]
    assert bodies == [
        {
            "type": "artifact.created",
            "artifact_id": artifact_id,
            "event_id": bodies[0]["event_id"],
            "time": bodies[0]["time"],
        }
    ]
    assert _staged(objects) == []


def test_the_same_task_and_slot_store_one_artifact(
    tmp_path: Path, engine: Engine, objects: ObjectStore
) -> None:
    task_id = str(uuid.uuid4())
    outputs = OutputStore(engine, objects)
    path = _file(tmp_path, 1000)
    first = outputs.store(
        task_id=task_id, project_id=PROJECT, owner_id="alice", output=REPORT, path=path
    )
    # A redelivered copy: the row is READY, so nothing is read or written again (the
    # file is gone to prove it).
    path.unlink()
    again = outputs.store(
        task_id=task_id, project_id=PROJECT, owner_id="alice", output=REPORT, path=path
    )
    other_slot = outputs.store(
        task_id=task_id,
        project_id=PROJECT,
        owner_id="alice",
        output=Output(slot="report-pdf", name="r.pdf", kind="document", content_type="x/y"),
        path=_file(tmp_path, 10),
    )
    assert first == again == output_artifact_id(task_id, "report-html")
    assert other_slot == output_artifact_id(task_id, "report-pdf") != first
    assert output_artifact_id(str(uuid.uuid4()), "report-html") != first
    assert len(_rows(engine)) == 2


class _FailingStore:
    """A file store whose writers fail after ``good`` writes (the disk or S3 went away)."""

    def __init__(self, inner: ObjectStore, good: int) -> None:
        self._inner = inner
        self._good = good
        self.url = inner.url

    def open_writer(self, key: str, committed: int, state: str) -> UploadWriter:
        writer = self._inner.open_writer(key, committed, state)
        store = self

        class Writer:
            committed = property(lambda _: writer.committed)
            written = property(lambda _: writer.written)

            def write(self, data: bytes) -> Any:
                if store._good <= 0:
                    raise ObjectStoreError("disk went away")
                store._good -= 1
                return writer.write(data)

            def checkpoint(self) -> Any:
                return writer.checkpoint()

            def finish(self) -> None:
                writer.finish()

            def close(self) -> None:
                writer.close()

        return Writer()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_failed_store_leaves_nothing_visible_and_nothing_staged(
    tmp_path: Path, engine: Engine, objects: ObjectStore
) -> None:
    task_id = str(uuid.uuid4())
    path = _file(tmp_path, 3 * 1024 * 1024)
    failing: Any = _FailingStore(objects, good=1)
    with pytest.raises(ObjectStoreError):
        OutputStore(engine, failing).store(
            task_id=task_id, project_id=PROJECT, owner_id="alice", output=REPORT, path=path
        )
    artifact_id = output_artifact_id(task_id, REPORT.slot)
    assert _rows(engine) == []
    assert objects.size(object_key(PROJECT, artifact_id)) is None
    assert _staged(objects) == []
    # The retry (the store is back) stores it.
    assert (
        OutputStore(engine, objects).store(
            task_id=task_id, project_id=PROJECT, owner_id="alice", output=REPORT, path=path
        )
        == artifact_id
    )
    assert b"".join(objects.read(object_key(PROJECT, artifact_id))) == path.read_bytes()


def _context(engine: Engine, objects: ObjectStore, project_id: str | None) -> TaskContext:
    # Only the fields store_output reads; the attempt's writes are not exercised here.
    record: Any = type(
        "Record", (), {"project_id": project_id, "owner_id": "alice", "cancel_requested": False}
    )()
    return TaskContext(
        task_id=str(uuid.uuid4()),
        attempt=1,
        worker="w",
        store=AttemptStore(engine),
        lease_seconds=30.0,
        notify=lambda _task, _seq: None,
        record=record,
        objects=objects,
        outputs=OutputStore(engine, objects),
    )


def test_the_context_maps_failures_to_the_tasks_errors(
    tmp_path: Path, engine: Engine, objects: ObjectStore
) -> None:
    path = _file(tmp_path, 100)
    with pytest.raises(PermanentError) as no_project:
        _context(engine, objects, None).store_output(REPORT, path)
    assert no_project.value.reason == "NO_PROJECT"

    context = _context(engine, objects, PROJECT)
    context._outputs = OutputStore(engine, _FailingStore(objects, good=0))
    with pytest.raises(TransientError, match="disk went away"):
        context.store_output(REPORT, path)

    stored = _context(engine, objects, PROJECT).store_output(REPORT, path)
    assert _rows(engine)[0].id == stored

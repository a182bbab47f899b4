"""Artifacts a task produces (reports, result tables): stored once, visible only whole.

A kind's function writes its output to a local file and hands it to
``TaskContext.store_output``. The bytes go to the object store first, through a staged
upload that becomes visible only when complete; then one transaction inserts the READY
artifact row with its verified size and sha256, and the ``artifact.created`` event in the
outbox. Nothing half-written is ever visible: before the row commits, no API call can name
the artifact.

The artifact's id is derived from the task and the output's slot (``uuid5``), not drawn
at random, so every attempt and every redelivered copy of a task writes the same artifact:
a retried or re-run task leaves one result artifact per slot, never duplicates. A copy
that finds the row already READY keeps it and stores nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from core import events
from core.db import ArtifactRow, ArtifactWorkProductRow
from core.objects import ObjectStore, object_key

__all__ = ["Output", "OutputStore", "output_artifact_id"]

# The namespace of output artifact ids: uuid5(namespace, "<task id>/<slot>").
_OUTPUTS = uuid.UUID("8f6d1c3e-5b0a-4c8e-9a43-2f1d7e6b9c50")
_PIECE_BYTES = 1024 * 1024
_READY = "ready"


@dataclass(frozen=True, slots=True)
class Output:
    """What a task stores: its slot in the task and the artifact's metadata."""

    slot: str
    """Unique within the task and stable across attempts (``report-html``): the id's seed."""
    name: str
    """The artifact's display name."""
    kind: str
    """``document`` or ``dataset`` (the artifacts table's values)."""
    content_type: str
    fmt: str = ""
    """For datasets: ``csv``, ``parquet`` or ``jsonl``."""
    work_products: Sequence[str] = field(default_factory=tuple)
    """For documents: the ASPICE work products it provides."""


def output_artifact_id(task_id: str, slot: str) -> str:
    """The id of the artifact ``task_id`` stores in ``slot``, the same for every attempt."""
    return str(uuid.uuid5(_OUTPUTS, f"{task_id}/{slot}"))


class OutputStore:
    """Writes output artifacts: bytes to the object store, then the row (and its event)."""

    def __init__(self, engine: Engine, objects: ObjectStore) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._objects = objects

    def store(
        self, *, task_id: str, project_id: str, owner_id: str, output: Output, path: Path
    ) -> str:
        """Store the file at ``path`` as ``output`` of the task; returns the artifact's id.

        Idempotent: a second call for the same task and slot returns the id at once when
        the artifact is READY, and otherwise writes the same object again. Object-store
        and database errors propagate (the caller maps them to a retry).
        """
        artifact_id = output_artifact_id(task_id, output.slot)
        with self._sessions() as session:
            row = session.get(ArtifactRow, artifact_id)
            if row is not None and row.state == _READY:
                return artifact_id
        key = object_key(project_id, artifact_id)
        size, sha256 = self._put(key, path)
        now = datetime.now(UTC)
        try:
            with self._sessions.begin() as session:
                session.add(
                    ArtifactRow(
                        id=artifact_id,
                        project_id=project_id,
                        owner_id=owner_id,
                        name=output.name,
                        kind=output.kind,
                        content_type=output.content_type,
                        format=output.fmt,
                        state=_READY,
                        declared_size=size,
                        declared_sha256=sha256,
                        size_bytes=size,
                        sha256=sha256,
                        object_key=key,
                        # The upload name of an output is derived like its id: unique, and
                        # never the name of an open upload (those are random uuid4s).
                        upload_id=str(uuid.uuid5(_OUTPUTS, f"{task_id}/{output.slot}/upload")),
                        committed_size=size,
                        store_state="",
                        failure_reason="",
                        create_time=now,
                        update_time=now,
                        version=1,
                    )
                )
                session.flush()
                for work_product in sorted(set(output.work_products)):
                    session.add(
                        ArtifactWorkProductRow(artifact_id=artifact_id, work_product=work_product)
                    )
                events.add(
                    session, events.DomainEvent(events.EventType.ARTIFACT_CREATED, artifact_id)
                )
        except IntegrityError:
            # Another copy of this task inserted the row first: its bytes are the same.
            pass
        return artifact_id

    def _put(self, key: str, path: Path) -> tuple[int, str]:
        """Upload ``path`` under ``key`` (visible only once whole); its size and sha256."""
        digest = hashlib.sha256()
        size = 0
        state = self._objects.begin_upload(key)
        writer = self._objects.open_writer(key, 0, state)
        try:
            with path.open("rb", buffering=0) as source:
                while piece := source.read(_PIECE_BYTES):
                    writer.write(piece)
                    digest.update(piece)
                    size += len(piece)
            writer.finish()
        except BaseException:
            writer.close()
            self._objects.abort_upload(key, state)
            raise
        return size, digest.hexdigest()

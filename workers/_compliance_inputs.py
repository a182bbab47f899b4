"""What a compliance report reads: the project's documents and the traceability export.

Both are read-only. The documents come from the ``artifacts`` and
``artifact_work_products`` tables on the worker's own database engine (workers never go
through the API server); the export is a dataset artifact read with DuckDB.

The export is read in two steps: DuckDB scans the file into a table in its own memory
(within the worker's DuckDB memory limit, spilling beyond it; the scan is watched, so a
CancelTask interrupts it and its progress is reported), then the rows stream out in
batches of ``BATCH_ROWS`` into ``Traceability``, which keeps only the compact index the
checks need (see ``workers._compliance_checks`` for its bound).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentic.artifacts.v1 import artifacts_pb2
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from core.db import ArtifactRow, ArtifactWorkProductRow
from workers._compliance_checks import COLUMNS, Traceability
from workers._context import PermanentError, TaskContext, TransientError
from workers._duckdb import Engine as DuckDB
from workers._duckdb import dataset_format, quote, source

__all__ = ["BATCH_ROWS", "Dataset", "dataset", "documents", "read_traceability"]

BATCH_ROWS = 10_000
"""Rows fetched from DuckDB at a time (a cancel is seen between two batches)."""
_DOCUMENT, _DATASET, _READY = "document", "dataset", "ready"
_PROGRESS_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Dataset:
    """The traceability artifact as the report names and reads it."""

    name: str
    fmt: str


def documents(engine: Engine, project_id: str) -> Mapping[str, Sequence[str]]:
    """Work-product id -> names of the project's READY documents tagged with it (sorted).

    A database outage raises TransientError.
    """
    query = (
        select(ArtifactWorkProductRow.work_product, ArtifactRow.name)
        .join(ArtifactRow, ArtifactRow.id == ArtifactWorkProductRow.artifact_id)
        .where(
            ArtifactRow.project_id == project_id,
            ArtifactRow.kind == _DOCUMENT,
            ArtifactRow.state == _READY,
        )
        .order_by(ArtifactWorkProductRow.work_product, ArtifactRow.name, ArtifactRow.id)
    )
    provided: dict[str, list[str]] = {}
    try:
        with engine.connect() as connection:
            for work_product, name in connection.execute(query):
                provided.setdefault(work_product, []).append(name)
    except (DBAPIError, SQLAlchemyError) as exc:
        raise TransientError(f"reading the project's documents: {exc}") from exc
    return provided


def dataset(engine: Engine, project_id: str, ref: artifacts_pb2.ArtifactRef) -> Dataset:
    """The traceability artifact's name and format; TRACEABILITY_INVALID unless it is a
    READY dataset of the project (the server checked that at submit; it may have changed)."""
    try:
        with engine.connect() as connection:
            row = connection.execute(
                select(
                    ArtifactRow.name, ArtifactRow.kind, ArtifactRow.format, ArtifactRow.state
                ).where(ArtifactRow.id == ref.artifact_id, ArtifactRow.project_id == project_id)
            ).one_or_none()
    except (DBAPIError, SQLAlchemyError) as exc:
        raise TransientError(f"reading artifact {ref.artifact_id}: {exc}") from exc
    if row is None or row.state != _READY:
        raise PermanentError(
            f"the traceability export {ref.artifact_id} is no longer a READY artifact of the "
            "project (deleted?)",
            reason="ARTIFACT_MISSING",
        )
    if row.kind != _DATASET:
        raise PermanentError(
            f"the traceability export {row.name!r} is a document; upload it as a dataset "
            "(CSV, Parquet or JSON lines)",
            reason="TRACEABILITY_INVALID",
        )
    return Dataset(name=row.name, fmt=dataset_format(ref) or row.format)


def read_traceability(
    context: TaskContext, ref: artifacts_pb2.ArtifactRef, fmt: str, span: tuple[float, float]
) -> Traceability:
    """Every item of the export, checked row by row (PermanentError on bad data)."""
    start, end = span
    middle = start + (end - start) / 2
    with (
        context.artifact_file(ref) as path,
        DuckDB(context) as duck,
    ):
        table = source(fmt)
        described = duck.run(
            f"DESCRIBE SELECT * FROM {table}", [str(path)], stage="reading the export's columns"
        )
        types = {str(name).strip().lower(): (str(name), str(kind)) for name, kind, *_ in described}
        Traceability.check_columns([str(name).strip().lower() for name, *_ in described])
        columns = []
        for column in COLUMNS:
            name, kind = types[column]
            # A Parquet or JSON export may hold the linked ids as a list already.
            if column == "linked_ids" and kind.endswith("[]"):
                columns.append(f"array_to_string({quote(name)}, ';')")
            else:
                columns.append(f"CAST({quote(name)} AS VARCHAR)")
        duck.run(
            f"CREATE TABLE items AS SELECT {', '.join(columns)} FROM {table}",
            [str(path)],
            stage="reading the traceability export",
            span=(start, middle),
        )
        (total,) = duck.run("SELECT count(*) FROM items", stage="counting items")[0]
        trace = Traceability()
        cursor = duck.connection.execute("SELECT * FROM items ORDER BY rowid")
        row = 0
        reported = time.monotonic()
        while batch := cursor.fetchmany(BATCH_ROWS):
            context.raise_if_cancelled()
            for values in batch:
                row += 1
                trace.add(row, *values)
            if time.monotonic() - reported >= _PROGRESS_SECONDS:
                reported = time.monotonic()
                context.report_progress(
                    middle + (end - middle) * row / max(total, 1),
                    f"checked {row:,} of {total:,} traceability items",
                )
    return trace

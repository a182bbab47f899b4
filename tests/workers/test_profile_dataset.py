"""ProfileDataset end to end: uploaded datasets profiled by real worker processes.

A real API server and real ``python -m workers`` processes share a file object store and a
SQLite database on a private RabbitMQ vhost. Every expected figure is computed here, from
the generated pyarrow table (``tests.workers._datasets``) with pyarrow.compute or plain
Python, never from the code under test. The cancel grace is long (30 s), so a task that
ends CANCELLED within 2 s was stopped by its own interrupted DuckDB statement, not killed.
"""

from __future__ import annotations

import hashlib
import io
import math
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

# pyarrow ships no type information.
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import datasets_pb2 as dpb
from agentic.tasks.v1 import profile_dataset_pb2 as prof
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.rpc import error_details_pb2
from sqlalchemy import func, select

from core.db import ArtifactRow
from tests._identity import authorized_channel
from tests.server.artifacts._bytestream import download, upload
from tests.workers._damage import damage_object
from tests.workers._datasets import known_table, rows_for_bytes, write
from tests.workers._stack import (
    TIMEOUT,
    Stack,
    assert_progress_cadence,
    private_vhost,
    stack,
    wait_state,
    watch_to_end,
)
from workers._outputs import output_artifact_id

_FORMATS = {
    "csv": apb.DATASET_FORMAT_CSV,
    "parquet": apb.DATASET_FORMAT_PARQUET,
    "jsonl": apb.DATASET_FORMAT_JSONL,
}
_RANGED = {"id", "amount", "quantity", "created", "day"}
_BINS = 12
_TOP_K = 7
_LONG_ROWS = 40_000_000
_Stubs = tuple[tasks_pb2_grpc.TaskServiceStub, artifacts_pb2_grpc.ArtifactServiceStub, str]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server and one worker (concurrency 1) on a private vhost, a long cancel grace."""
    workdir = tmp_path_factory.mktemp("profile")
    with (
        private_vhost() as broker,
        stack(
            workdir, broker, f"sqlite:///{workdir / 'tasks.db'}", AGENTIC_CANCEL_GRACE_SECONDS="30"
        ) as s,
    ):
        s.start_server()
        s.start_worker(concurrency=1)
        yield s


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """About 50 MB of CSV worth of rows of known distributions."""
    return known_table(rows_for_bytes(50_000_000))


@pytest.fixture(scope="module")
def files(table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The table as CSV, Parquet and JSON lines."""
    where = tmp_path_factory.mktemp("datasets")
    return {fmt: write(table, where / f"known.{fmt}", fmt) for fmt in _FORMATS}


@pytest.fixture
def stubs(pipeline: Stack) -> Iterator[_Stubs]:
    """Task and artifact stubs, and a fresh project's id."""
    channel = authorized_channel(pipeline.servers[0].address)
    try:
        project = projects_pb2_grpc.ProjectServiceStub(channel).CreateProject(
            ppb.CreateProjectRequest(project=ppb.Project(name=f"p-{uuid.uuid4().hex[:8]}")),
            timeout=TIMEOUT,
        )
        yield (
            tasks_pb2_grpc.TaskServiceStub(channel),
            artifacts_pb2_grpc.ArtifactServiceStub(channel),
            project.project.id,
        )
    finally:
        channel.close()


def _upload(
    artifacts: artifacts_pb2_grpc.ArtifactServiceStub,
    project: str,
    path: Path,
    fmt: str,
    *,
    kind: apb.ArtifactKind.ValueType = apb.ARTIFACT_KIND_DATASET,
) -> str:
    return str(upload(artifacts, project, path, name=path.name, fmt=_FORMATS[fmt], kind=kind).id)


def _submit(
    tasks: tasks_pb2_grpc.TaskServiceStub, project: str, artifact_id: str, **options: int
) -> pb.Task:
    request = pb.SubmitProfileDatasetRequest(
        request_id=str(uuid.uuid4()),
        project_id=project,
        profile_dataset=prof.ProfileDatasetSpec(
            dataset=apb.ArtifactRef(artifact_id=artifact_id), **options
        ),
    )
    task: pb.Task = tasks.SubmitProfileDataset(request, timeout=TIMEOUT).task
    return task


def _profile_of(stubs: _Stubs, path: Path, fmt: str, **options: int) -> pb.Task:
    tasks, artifacts, project = stubs
    task = _submit(tasks, project, _upload(artifacts, project, path, fmt), **options)
    final = watch_to_end(tasks, task.id, timeout=120)[-1].task
    assert final.state == pb.TASK_STATE_SUCCEEDED, final.error
    return final


def _reports(s: Stack, project: str) -> int:
    with s.db().connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(ArtifactRow)
                .where(ArtifactRow.project_id == project, ArtifactRow.kind == "document")
            ).scalar_one()
        )


# --- the reference: plain Python and pyarrow over the generated table -----------------


def _scalar(value: dpb.Value) -> Any:
    """A Value as the Python value pyarrow gives for the same cell."""
    kind = value.WhichOneof("kind")
    if kind == "date_value":
        return date(value.date_value.year, value.date_value.month, value.date_value.day)
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime()
    return getattr(value, kind) if kind else None


def _number(value: Any) -> float:
    """A cell on the axis the histogram uses: days or microseconds since 1970 for times."""
    if isinstance(value, datetime):
        return (value.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) / _MICRO
    if isinstance(value, date):
        return float((value - date(1970, 1, 1)).days)
    return float(value)


_MICRO = timedelta(microseconds=1)


def _check_column(column: prof.ColumnProfile, values: pa.ChunkedArray, rows: int) -> None:
    name = column.column.name
    cells = [v for v in values.to_pylist() if v is not None]
    assert column.null_count == rows - len(cells), name
    exact_distinct = len(set(cells))
    assert abs(column.approx_distinct - exact_distinct) <= 0.03 * exact_distinct, name
    assert _scalar(column.min) == min(cells), name
    assert _scalar(column.max) == max(cells), name
    counts = Counter(cells)
    expected_top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:_TOP_K]
    assert [(_scalar(v.value), v.count) for v in column.top_values] == expected_top, name
    if pa.types.is_boolean(values.type):
        assert column.mean == pytest.approx(sum(cells) / len(cells), rel=1e-12)
    if name in ("id", "amount", "quantity"):
        assert column.mean == pytest.approx(pc.mean(values).as_py(), rel=1e-9), name
        assert column.stddev == pytest.approx(pc.stddev(values, ddof=1).as_py(), rel=1e-9), name
    if name not in _RANGED:
        assert not column.histogram, name
        assert not column.HasField("p50"), name
        return
    ordered = sorted(_number(v) for v in cells)
    spread = ordered[-1] - ordered[0]
    for field, q in (("p25", 0.25), ("p50", 0.5), ("p75", 0.75)):
        reference = ordered[math.ceil(q * len(ordered)) - 1]  # nearest rank
        assert abs(_number(_scalar(getattr(column, field))) - reference) <= 1e-3 * spread, name
    low, high = ordered[0], ordered[-1]
    expected = [0] * _BINS
    for x in ordered:
        expected[min(math.floor((x - low) * float(_BINS) / (high - low)), _BINS - 1)] += 1
    assert [b.count for b in column.histogram] == expected, name
    # A date column's bounds are timestamps (microseconds), its days the reference's axis.
    scale = 86_400_000_000 if column.column.type == dpb.COLUMN_TYPE_DATE else 1
    assert _number(_scalar(column.histogram[0].lower)) == pytest.approx(low * scale), name
    assert _number(_scalar(column.histogram[-1].upper)) == pytest.approx(high * scale), name


# --- tests ----------------------------------------------------------------------------


def test_profile_equals_the_reference_and_the_report_downloads(
    pipeline: Stack, stubs: _Stubs, table: pa.Table, files: dict[str, Path]
) -> None:
    assert files["csv"].stat().st_size > 45_000_000
    final = _profile_of(stubs, files["csv"], "csv", top_k=_TOP_K, histogram_bins=_BINS)
    result = final.profile_dataset_result
    profile = result.profile
    assert profile.row_count == table.num_rows
    assert profile.format == "CSV"
    assert profile.size_bytes == files["csv"].stat().st_size
    assert [c.column.name for c in profile.columns] == table.column_names
    expected_types = {
        "id": dpb.COLUMN_TYPE_INTEGER,
        "category": dpb.COLUMN_TYPE_STRING,
        "amount": dpb.COLUMN_TYPE_FLOAT,
        "quantity": dpb.COLUMN_TYPE_INTEGER,
        "created": dpb.COLUMN_TYPE_TIMESTAMP,
        "day": dpb.COLUMN_TYPE_DATE,
        "flag": dpb.COLUMN_TYPE_BOOLEAN,
        "note": dpb.COLUMN_TYPE_STRING,
    }
    assert {c.column.name: c.column.type for c in profile.columns} == expected_types
    for column in profile.columns:
        _check_column(column, table[column.column.name], table.num_rows)

    # The report: a READY document of the project, its id derived from task and slot.
    assert result.report_artifact_id == output_artifact_id(final.id, "report-html")
    _, artifacts, project = stubs
    report = artifacts.GetArtifact(
        apb.GetArtifactRequest(id=result.report_artifact_id), timeout=TIMEOUT
    ).artifact
    assert report.kind == apb.ARTIFACT_KIND_DOCUMENT
    assert report.content_type == "text/html"
    buffer = io.BytesIO()
    download(artifacts, result.report_artifact_id, buffer)
    page = buffer.getvalue().decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert page.count("<svg") == len(_RANGED)
    assert _reports(pipeline, project) == 1


def test_parquet_and_json_lines_give_the_same_profile(
    stubs: _Stubs, files: dict[str, Path]
) -> None:
    profiles = {
        fmt: _profile_of(stubs, files[fmt], fmt, top_k=_TOP_K, histogram_bins=_BINS)
        for fmt in _FORMATS
    }
    results = {fmt: task.profile_dataset_result.profile for fmt, task in profiles.items()}
    for fmt, profile in results.items():
        assert profile.format == fmt.upper()
        assert profile.size_bytes == files[fmt].stat().st_size
    csv = results["csv"]
    for fmt in ("parquet", "jsonl"):
        assert results[fmt].row_count == csv.row_count
        assert list(results[fmt].columns) == list(csv.columns), fmt


def test_the_same_spec_gives_the_same_result(stubs: _Stubs, files: dict[str, Path]) -> None:
    tasks, artifacts, project = stubs
    artifact = _upload(artifacts, project, files["parquet"], "parquet")
    first, second = (
        watch_to_end(tasks, _submit(tasks, project, artifact).id, timeout=120)[-1].task
        for _ in range(2)
    )
    assert first.state == second.state == pb.TASK_STATE_SUCCEEDED
    assert first.profile_dataset_result.profile == second.profile_dataset_result.profile
    # Defaults: 10 top values, 20 bins.
    columns = {c.column.name: c for c in first.profile_dataset_result.profile.columns}
    assert len(columns["id"].top_values) == 10
    assert len(columns["id"].histogram) == 20


def _wide_csv(path: Path, columns: int) -> Path:
    header = ",".join(f"c{index}" for index in range(columns))
    row = ",".join(str(index) for index in range(columns))
    path.write_text(f"{header}\n{row}\n{row}\n")
    return path


@pytest.mark.parametrize(
    ("case", "content", "reason"),
    [
        ("ragged", b"a,b,c\n1,2,3\n4,5\n6,7,8,9\n", "DATASET_UNREADABLE"),
        ("utf8", b"a,b\n1,caf\xe9\n2,ok\n", "DATASET_UNREADABLE"),
        ("empty", b"", "DATASET_EMPTY"),
        (
            "binary",
            hashlib.sha512(b"seed").digest() * 400 + b"\x00\xff" * 3000,
            "DATASET_UNREADABLE",
        ),
        ("wide", None, "TOO_MANY_COLUMNS"),
    ],
)
def test_malformed_data_fails_with_a_reason_and_stores_nothing(
    pipeline: Stack,
    stubs: _Stubs,
    tmp_path: Path,
    case: str,
    content: bytes | None,
    reason: str,
) -> None:
    tasks, artifacts, project = stubs
    path = tmp_path / f"{case}.csv"
    if content is None:
        _wide_csv(path, 10_000)
    else:
        path.write_bytes(content)
    task = _submit(tasks, project, _upload(artifacts, project, path, "csv"))
    final = watch_to_end(tasks, task.id, timeout=60)[-1].task
    assert final.state == pb.TASK_STATE_FAILED, final
    info = error_details_pb2.ErrorInfo()
    assert final.error.details[0].Unpack(info)
    assert info.reason == reason, final.error.message
    assert final.error.message
    assert _reports(pipeline, project) == 0


def test_header_only_and_wide_but_allowed_files_profile(stubs: _Stubs, tmp_path: Path) -> None:
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b,c\n")
    profile = _profile_of(stubs, header_only, "csv").profile_dataset_result.profile
    assert profile.row_count == 0
    assert [(c.column.name, c.null_count, len(c.top_values)) for c in profile.columns] == [
        ("a", 0, 0),
        ("b", 0, 0),
        ("c", 0, 0),
    ]
    wide = _profile_of(stubs, _wide_csv(tmp_path / "wide.csv", 1000), "csv")
    columns = wide.profile_dataset_result.profile.columns
    assert len(columns) == 1000
    assert [c.min.int_value for c in columns] == list(range(1000))


def test_a_document_is_not_a_dataset(pipeline: Stack, stubs: _Stubs, tmp_path: Path) -> None:
    tasks, artifacts, project = stubs
    path = tmp_path / "notes.csv"
    path.write_text("a,b\n1,2\n")
    document = _upload(artifacts, project, path, "csv", kind=apb.ARTIFACT_KIND_DOCUMENT)
    final = watch_to_end(tasks, _submit(tasks, project, document).id)[-1].task
    assert final.state == pb.TASK_STATE_FAILED
    info = error_details_pb2.ErrorInfo()
    assert final.error.details[0].Unpack(info)
    assert info.reason == "NOT_A_DATASET"


@pytest.fixture(scope="module")
def long_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Parquet file (dictionary-encoded) whose 40 million rows take seconds."""
    chunk = pa.table(
        {
            "k": pa.array([i % 1000 for i in range(100_000)], pa.int64()),
            "x": pa.array([float(i % 977) for i in range(100_000)], pa.float64()),
        }
    )
    path = tmp_path_factory.mktemp("long") / "long.parquet"
    with pq.ParquetWriter(path, chunk.schema) as writer:
        for _ in range(_LONG_ROWS // chunk.num_rows):
            writer.write_table(chunk)
    return path


def _running_past(tasks: tasks_pb2_grpc.TaskServiceStub, task_id: str, fraction: float) -> None:
    wait_state(tasks, task_id, {pb.TASK_STATE_RUNNING}, timeout=60)
    for item in tasks.WatchTask(pb.WatchTaskRequest(id=task_id), timeout=60):
        if item.HasField("event") and item.event.progress.fraction >= fraction:
            return
    raise AssertionError(f"task {task_id} ended before it reached {fraction}")


def test_cancel_inside_a_long_statement_ends_cancelled_within_2s(
    stubs: _Stubs, long_dataset: Path
) -> None:
    tasks, artifacts, project = stubs
    task = _submit(tasks, project, _upload(artifacts, project, long_dataset, "parquet"))
    _running_past(tasks, task.id, 0.2)  # inside the read or the first statistics
    asked = datetime.now(UTC)
    tasks.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=TIMEOUT)
    final = watch_to_end(tasks, task.id, timeout=30)[-1]
    assert final.task.state == pb.TASK_STATE_CANCELLED
    assert (final.time.ToDatetime(tzinfo=UTC) - asked).total_seconds() < 2.0


def test_kill_9_mid_profile_completes_elsewhere_with_one_report(
    pipeline: Stack, stubs: _Stubs, long_dataset: Path
) -> None:
    tasks, artifacts, project = stubs
    task = _submit(tasks, project, _upload(artifacts, project, long_dataset, "parquet"))
    _running_past(tasks, task.id, 0.3)
    pipeline.workers[0].kill()
    killed = datetime.now(UTC)
    pipeline.start_worker(concurrency=1)
    events = watch_to_end(tasks, task.id, timeout=120)
    final = events[-1].task
    assert final.state == pb.TASK_STATE_SUCCEEDED, final.error
    assert final.attempt == 1  # the same attempt, taken over: not a retry
    profile = final.profile_dataset_result.profile
    assert profile.row_count == _LONG_ROWS
    k = profile.columns[0]
    assert (k.min.int_value, k.max.int_value, k.approx_distinct) == (0, 999, 1000)
    assert _reports(pipeline, project) == 1
    # Progress while the survivor ran: never 2 s and 5% without a report.
    survivor = [
        e
        for e in events
        if e.state == pb.TASK_STATE_RUNNING and e.time.ToDatetime(tzinfo=UTC) > killed
    ]
    assert len(survivor) >= 3
    assert_progress_cadence(survivor)


@pytest.mark.parametrize(
    ("case", "byte"),
    [("a digit changed, still a valid CSV", b"7"), ("an invalid UTF-8 byte", b"\xff")],
)
def test_damaged_bytes_fail_artifact_damaged_and_store_nothing(
    pipeline: Stack, stubs: _Stubs, tmp_path: Path, case: str, byte: bytes
) -> None:
    # The file store's object is checked beside the load (check ahead): the task must
    # still fail ARTIFACT_DAMAGED, also when the load itself fails on the damaged bytes.
    tasks, artifacts, project = stubs
    path = tmp_path / "numbers.csv"
    path.write_text("n,m\n" + "".join(f"{i},{i % 10}\n" for i in range(200_000)))
    artifact = _upload(artifacts, project, path, "csv")
    offset = path.read_bytes().index(b"\n123456,") + 1  # the first digit of a value
    damage_object(pipeline, artifact, offset, byte)
    final = watch_to_end(tasks, _submit(tasks, project, artifact).id, timeout=60)[-1].task
    assert final.state == pb.TASK_STATE_FAILED, (case, final)
    info = error_details_pb2.ErrorInfo()
    assert final.error.details[0].Unpack(info)
    assert info.reason == "ARTIFACT_DAMAGED", (case, final.error.message)
    assert final.attempt == 1  # failed at once, not retried
    assert _reports(pipeline, project) == 0

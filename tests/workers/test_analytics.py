"""RunAnalytics end to end: real API server, real worker processes, real file store.

The data are generated here (seeded): 300,000 rows with NULLs, text, timestamps, integers,
floats and booleans, uploaded as CSV, Parquet and JSON lines (``tests.workers._datasets``
``write``). Each query's answer is worked out
again in plain Python from the generated rows (filters, ISO-week buckets, exact
interpolated quantiles, the documented total order) and compared with the task's inline
rows and with its Parquet and CSV artifacts as ArtifactService.Read returns them.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import analytics_pb2 as a
from agentic.tasks.v1 import datasets_pb2 as d
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2

from tests._identity import authorized_channel
from tests._support import wait_for
from tests.server.artifacts._bytestream import download, upload
from tests.workers._damage import damage_object
from tests.workers._datasets import write
from tests.workers._stack import (
    TIMEOUT,
    Stack,
    assert_progress_cadence,
    private_vhost,
    stack,
    watch_to_end,
)

ROWS = 300_000
INJECTION = 'x"; DROP TABLE t; --'
REGIONS = ["north", "south", "east", "west", "central"]
PRODUCTS = [f"p{i:02d}" for i in range(40)]
START = datetime.datetime(2024, 1, 1)
SPAN_SECONDS = 182 * 86400
FORMATS = {
    "csv": apb.DATASET_FORMAT_CSV,
    "parquet": apb.DATASET_FORMAT_PARQUET,
    "jsonl": apb.DATASET_FORMAT_JSONL,
}


@dataclass
class Api:
    tasks: tasks_pb2_grpc.TaskServiceStub
    artifacts: artifacts_pb2_grpc.ArtifactServiceStub
    project: str
    datasets: dict[str, str]
    """format -> artifact id of the generated data."""
    big: str
    """A Parquet dataset whose query takes seconds (for the cancel test)."""
    stack: Stack


def _table() -> pa.Table:
    rng = random.Random(12)

    def maybe(value: Any, nulls: float) -> Any:
        return None if rng.random() < nulls else value

    region = [maybe(rng.choice(REGIONS), 0.05) for _ in range(ROWS)]
    return pa.table(
        {
            "id": pa.array(range(ROWS), pa.int64()),
            "region": pa.array(region, pa.string()),
            "product": pa.array([rng.choice(PRODUCTS) for _ in range(ROWS)], pa.string()),
            "amount": pa.array(
                [maybe(round(rng.lognormvariate(3, 1), 4), 0.1) for _ in range(ROWS)],
                pa.float64(),
            ),
            "quantity": pa.array([maybe(rng.randint(-5, 500), 0.08) for _ in range(ROWS)]),
            "ts": pa.array(
                [
                    maybe(START + datetime.timedelta(seconds=rng.randrange(SPAN_SECONDS)), 0.03)
                    for _ in range(ROWS)
                ],
                pa.timestamp("s"),
            ),
            "flag": pa.array([maybe(rng.random() < 0.3, 0.02) for _ in range(ROWS)]),
            "note": pa.array([f"note {rng.randrange(1000)}" for _ in range(ROWS)], pa.string()),
        }
    )


def _upload(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    project: str,
    path: Path,
    fmt: apb.DatasetFormat.ValueType,
) -> str:
    return str(upload(stub, project, path, name=path.name, fmt=fmt).id)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return _table()


@pytest.fixture(scope="module")
def rows(table: pa.Table) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = table.to_pylist()
    return listed


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, table: pa.Table) -> Iterator[Api]:
    workdir = tmp_path_factory.mktemp("analytics")
    data = workdir / "data"
    data.mkdir()
    for fmt in FORMATS:
        write(table, data / f"data.{fmt}", fmt)
    # 60 million rows that compress to a few MB: counting distinct pairs takes seconds.
    duckdb.execute(
        "COPY (SELECT range % 1000 AS k, (range * 7919) % 100003 AS v FROM range(60000000)) "
        "TO ? (FORMAT parquet, COMPRESSION zstd)",
        [str(data / "big.parquet")],
    )
    with (
        private_vhost() as broker,
        stack(workdir, broker, f"sqlite:///{workdir / 'tasks.db'}") as s,
    ):
        s.start_server()
        # A long cancel grace: only an interrupted query ends CANCELLED within 2 s.
        s.start_worker(
            concurrency=2,
            AGENTIC_DUCKDB_MEMORY_LIMIT_MIB="512",
            AGENTIC_CANCEL_GRACE_SECONDS="10",
        )
        channel = authorized_channel(s.servers[0].address)
        try:
            project = projects_pb2_grpc.ProjectServiceStub(channel).CreateProject(
                ppb.CreateProjectRequest(project=ppb.Project(name=f"a-{uuid.uuid4().hex[:8]}")),
                timeout=TIMEOUT,
            )
            artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
            pid = project.project.id
            yield Api(
                tasks=tasks_pb2_grpc.TaskServiceStub(channel),
                artifacts=artifacts,
                project=pid,
                datasets={
                    fmt: _upload(artifacts, pid, data / f"data.{fmt}", code)
                    for fmt, code in FORMATS.items()
                },
                big=_upload(artifacts, pid, data / "big.parquet", apb.DATASET_FORMAT_PARQUET),
                stack=s,
            )
        finally:
            channel.close()


def _submit(api: Api, dataset: str, spec: a.AnalyticsSpec) -> pb.Task:
    query = a.AnalyticsSpec()
    query.CopyFrom(spec)
    query.dataset.artifact_id = dataset
    request = pb.SubmitAnalyticsRequest(
        request_id=str(uuid.uuid4()), project_id=api.project, analytics=query
    )
    task: pb.Task = api.tasks.SubmitAnalytics(request, timeout=TIMEOUT).task
    return task


def _run(api: Api, dataset: str, spec: a.AnalyticsSpec) -> pb.Task:
    task = _submit(api, dataset, spec)
    final: pb.Task = watch_to_end(api.tasks, task.id, timeout=120)[-1].task
    return final


# --- the reference ---------------------------------------------------------------------


def _week(stamp: datetime.datetime | None) -> datetime.datetime | None:
    if stamp is None:
        return None
    day = stamp.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - datetime.timedelta(days=day.weekday())


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _present(rows: list[dict[str, Any]], column: str) -> list[Any]:
    return [r[column] for r in rows if r[column] is not None]


def _sort(
    table: list[tuple[Any, ...]], names: Sequence[str], keys: Sequence[tuple[str, bool]]
) -> list[tuple[Any, ...]]:
    """The documented order: the keys, then every other output column ascending, NULLs
    last either way (stable passes from the last key to the first)."""
    given = [name for name, _ in keys]
    every = [*keys, *((n, False) for n in names if n not in given)]
    for name, descending in reversed(every):
        index = names.index(name)
        present = [r for r in table if r[index] is not None]
        present.sort(key=lambda r: r[index], reverse=descending)
        table = present + [r for r in table if r[index] is None]
    return table


def _close(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    return bool(got == want) and type(got) is type(want)


def _assert_table(got: Sequence[Sequence[Any]], want: Sequence[Sequence[Any]], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}"
    for number, (g, w) in enumerate(zip(got, want, strict=True)):
        assert all(_close(x, y) for x, y in zip(g, w, strict=True)), (
            f"{what}, row {number}: {tuple(g)} != {tuple(w)}"
        )


def _cell(value: d.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "null_value":
        return None
    if kind == "date_value":
        return datetime.date(value.date_value.year, value.date_value.month, value.date_value.day)
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime()
    return getattr(value, str(kind))


def _parse_csv(text: str, types: Sequence[int]) -> list[tuple[Any, ...]]:
    parsers: dict[int, Callable[[str], Any]] = {
        d.COLUMN_TYPE_INTEGER: int,
        d.COLUMN_TYPE_FLOAT: float,
        d.COLUMN_TYPE_STRING: str,
        d.COLUMN_TYPE_TIMESTAMP: datetime.datetime.fromisoformat,
        d.COLUMN_TYPE_BOOLEAN: lambda s: s == "true",
    }
    reader = csv.reader(io.StringIO(text))
    next(reader)
    return [
        tuple(parsers[t](cell) if cell != "" else None for cell, t in zip(row, types, strict=True))
        for row in reader
    ]


def _artifacts(api: Api, task: pb.Task) -> tuple[list[tuple[Any, ...]], str, list[str]]:
    """The Parquet artifact's rows, the CSV artifact's text and the Parquet's names."""
    result = task.analytics_result
    parquet, text = io.BytesIO(), io.BytesIO()
    download(api.artifacts, result.parquet_artifact_id, parquet)
    download(api.artifacts, result.csv_artifact_id, text)
    stored = pq.read_table(io.BytesIO(parquet.getvalue()))
    names = stored.column_names
    as_rows = [tuple(r[n] for n in names) for r in stored.to_pylist()]
    return as_rows, text.getvalue().decode(), names


# --- the main query --------------------------------------------------------------------

LOW, HIGH = 1.0, 400.0
PICKED = PRODUCTS[:25]


def _main_spec() -> a.AnalyticsSpec:
    return a.AnalyticsSpec(
        group_by=["region"],
        time_bucket=a.TimeBucket(column="ts", granularity=a.TIME_GRANULARITY_WEEK),
        measures=[
            a.Measure(function=a.MEASURE_FUNCTION_COUNT),
            a.Measure(function=a.MEASURE_FUNCTION_COUNT, column="amount"),
            a.Measure(function=a.MEASURE_FUNCTION_COUNT_DISTINCT, column="product"),
            a.Measure(function=a.MEASURE_FUNCTION_SUM, column="amount", alias="revenue"),
            a.Measure(function=a.MEASURE_FUNCTION_SUM, column="quantity"),
            a.Measure(function=a.MEASURE_FUNCTION_AVG, column="amount"),
            a.Measure(function=a.MEASURE_FUNCTION_MIN, column="note"),
            a.Measure(function=a.MEASURE_FUNCTION_MAX, column="quantity"),
            a.Measure(function=a.MEASURE_FUNCTION_P50, column="quantity"),
            a.Measure(function=a.MEASURE_FUNCTION_P95, column="amount"),
        ],
        filters=[
            a.Filter(column="amount", operator=a.FILTER_OPERATOR_GE, value=d.Value(int_value=1)),
            a.Filter(
                column="amount", operator=a.FILTER_OPERATOR_LT, value=d.Value(double_value=HIGH)
            ),
            a.Filter(
                column="product",
                operator=a.FILTER_OPERATOR_IN,
                values=[d.Value(string_value=p) for p in PICKED],
            ),
            a.Filter(column="flag", operator=a.FILTER_OPERATOR_NE, value=d.Value(bool_value=True)),
        ],
        order_by=[a.OrderBy(column="revenue", descending=True)],
        limit=80,
    )


MAIN_NAMES = [
    "region",
    "ts",
    "count",
    "count_amount",
    "count_distinct_product",
    "revenue",
    "sum_quantity",
    "avg_amount",
    "min_note",
    "max_quantity",
    "p50_quantity",
    "p95_amount",
]
MAIN_TYPES = [
    d.COLUMN_TYPE_STRING,
    d.COLUMN_TYPE_TIMESTAMP,
    *[d.COLUMN_TYPE_INTEGER] * 3,
    d.COLUMN_TYPE_FLOAT,
    d.COLUMN_TYPE_INTEGER,
    d.COLUMN_TYPE_FLOAT,
    d.COLUMN_TYPE_STRING,
    d.COLUMN_TYPE_INTEGER,
    d.COLUMN_TYPE_FLOAT,
    d.COLUMN_TYPE_FLOAT,
]


def _main_reference(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["amount"] is None or not LOW <= r["amount"] < HIGH:
            continue
        if r["product"] not in PICKED or r["flag"] is None or r["flag"]:
            continue
        groups[(r["region"], _week(r["ts"]))].append(r)
    out = []
    for (region, week), members in groups.items():
        amounts, quantities = _present(members, "amount"), _present(members, "quantity")
        out.append(
            (
                region,
                week,
                len(members),
                len(amounts),
                len({m["product"] for m in members}),
                math.fsum(amounts) if amounts else None,
                sum(quantities) if quantities else None,
                math.fsum(amounts) / len(amounts) if amounts else None,
                min(_present(members, "note")),
                max(quantities) if quantities else None,
                _quantile([float(q) for q in quantities], 0.5),
                _quantile(amounts, 0.95),
            )
        )
    return _sort(out, MAIN_NAMES, [("revenue", True)])[:80]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_query_equals_the_reference(
    api: Api, rows: list[dict[str, Any]], fmt: str, tmp_path: Path
) -> None:
    final = _run(api, api.datasets[fmt], _main_spec())
    assert final.state == pb.TASK_STATE_SUCCEEDED, final.error
    result = final.analytics_result
    want = _main_reference(rows)
    assert [c.name for c in result.columns] == MAIN_NAMES
    assert [c.type for c in result.columns] == MAIN_TYPES
    assert result.row_count == len(want) == 80
    inline = [tuple(_cell(c) for c in row.cells) for row in result.rows]
    _assert_table(inline, want, f"{fmt}: inline rows")

    stored, text, names = _artifacts(api, final)
    assert names == MAIN_NAMES
    _assert_table(stored, want, f"{fmt}: the Parquet artifact")
    _assert_table(_parse_csv(text, MAIN_TYPES), want, f"{fmt}: the CSV artifact")
    assert text.splitlines()[0] == ",".join(MAIN_NAMES)

    for artifact_id, fmt_ in (
        (result.parquet_artifact_id, apb.DATASET_FORMAT_PARQUET),
        (result.csv_artifact_id, apb.DATASET_FORMAT_CSV),
    ):
        artifact = api.artifacts.GetArtifact(
            apb.GetArtifactRequest(id=artifact_id), timeout=TIMEOUT
        ).artifact
        assert artifact.project_id == api.project
        assert (artifact.kind, artifact.format) == (apb.ARTIFACT_KIND_DATASET, fmt_)
        assert artifact.state == apb.ARTIFACT_STATE_READY


def test_a_large_result_keeps_100_rows_inline_and_all_in_the_artifacts(
    api: Api, rows: list[dict[str, Any]]
) -> None:
    """No limit, no order given: every (product, day) group in the default order."""
    spec = a.AnalyticsSpec(
        group_by=["product"],
        time_bucket=a.TimeBucket(column="ts", granularity=a.TIME_GRANULARITY_DAY),
        measures=[a.Measure(function=a.MEASURE_FUNCTION_COUNT, alias="n")],
        filters=[a.Filter(column="ts", operator=a.FILTER_OPERATOR_IS_NOT_NULL)],
    )
    counts: dict[tuple[str, datetime.datetime], int] = defaultdict(int)
    for r in rows:
        if r["ts"] is not None:
            counts[(r["product"], r["ts"].replace(hour=0, minute=0, second=0))] += 1
    want = sorted((product, day, n) for (product, day), n in counts.items())
    assert len(want) > 5000

    final = _run(api, api.datasets["parquet"], spec)
    assert final.state == pb.TASK_STATE_SUCCEEDED, final.error
    result = final.analytics_result
    assert result.row_count == len(want)
    inline = [tuple(_cell(c) for c in row.cells) for row in result.rows]
    _assert_table(inline, want[:100], "inline rows")
    stored, text, _ = _artifacts(api, final)
    _assert_table(stored, want, "the Parquet artifact")
    types = [d.COLUMN_TYPE_STRING, d.COLUMN_TYPE_TIMESTAMP, d.COLUMN_TYPE_INTEGER]
    _assert_table(_parse_csv(text, types), want, "the CSV artifact")
    # Progress came from the work: DuckDB's own progress of the query, then the storing.
    messages = [e.task.progress.message for e in watch_to_end(api.tasks, final.id)]
    assert "storing the result" in messages, messages


def test_the_same_spec_twice_gives_the_same_result(api: Api) -> None:
    first, second = (_run(api, api.datasets["csv"], _main_spec()) for _ in range(2))
    assert first.id != second.id
    one, two = first.analytics_result, second.analytics_result
    assert (one.columns, one.rows, one.row_count) == (two.columns, two.rows, two.row_count)
    for attr in ("parquet_artifact_id", "csv_artifact_id"):
        digests = {
            api.artifacts.GetArtifact(
                apb.GetArtifactRequest(id=getattr(r, attr)), timeout=TIMEOUT
            ).artifact.sha256
            for r in (one, two)
        }
        assert len(digests) == 1, f"{attr}: the two results differ byte for byte"


def _since(stamp: datetime.datetime) -> d.Value:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(stamp)
    return d.Value(timestamp_value=value)


@pytest.mark.parametrize(
    ("spec", "reason", "column"),
    [
        (
            a.AnalyticsSpec(
                group_by=["regoin"], measures=[a.Measure(function=a.MEASURE_FUNCTION_COUNT)]
            ),
            "UNKNOWN_COLUMN",
            "regoin",
        ),
        (
            a.AnalyticsSpec(measures=[a.Measure(function=a.MEASURE_FUNCTION_SUM, column="note")]),
            "TYPE_MISMATCH",
            "note",
        ),
        (
            a.AnalyticsSpec(
                measures=[a.Measure(function=a.MEASURE_FUNCTION_COUNT)],
                filters=[
                    a.Filter(
                        column="quantity",
                        operator=a.FILTER_OPERATOR_EQ,
                        value=d.Value(string_value="12"),
                    )
                ],
            ),
            "TYPE_MISMATCH",
            "quantity",
        ),
        (
            a.AnalyticsSpec(
                measures=[a.Measure(function=a.MEASURE_FUNCTION_COUNT)],
                filters=[
                    a.Filter(
                        column="id",
                        operator=a.FILTER_OPERATOR_GT,
                        value=_since(datetime.datetime(2024, 1, 1)),
                    )
                ],
            ),
            "TYPE_MISMATCH",
            "id",
        ),
        (
            a.AnalyticsSpec(
                group_by=[INJECTION], measures=[a.Measure(function=a.MEASURE_FUNCTION_COUNT)]
            ),
            "UNKNOWN_COLUMN",
            INJECTION,
        ),
        (
            a.AnalyticsSpec(
                measures=[
                    a.Measure(function=a.MEASURE_FUNCTION_MAX, column="amount", alias="m"),
                    a.Measure(function=a.MEASURE_FUNCTION_MIN, column="amount", alias="m"),
                ]
            ),
            "INVALID_QUERY",
            "m",
        ),
    ],
    ids=[
        "unknown",
        "sum-of-text",
        "text-for-integer",
        "timestamp-for-integer",
        "injection",
        "clash",
    ],
)
def test_bad_queries_fail_at_once_naming_the_column(
    api: Api, spec: a.AnalyticsSpec, reason: str, column: str
) -> None:
    final = _run(api, api.datasets["csv"], spec)
    assert final.state == pb.TASK_STATE_FAILED, final
    assert final.attempt == 1  # failed at once: a retry would be TASK_RETRIES_EXHAUSTED
    info = error_details_pb2.ErrorInfo()
    assert final.error.details[0].Unpack(info)
    assert info.reason == reason, final.error.message
    assert info.metadata["column"] == column, info
    assert column in final.error.message
    assert not final.HasField("analytics_result")


def test_cancel_interrupts_a_long_query_within_two_seconds(api: Api) -> None:
    spec = a.AnalyticsSpec(
        group_by=["k"],
        measures=[a.Measure(function=a.MEASURE_FUNCTION_COUNT_DISTINCT, column="v")],
    )
    task = _submit(api, api.big, spec)
    seen: list[pb.Task] = []

    def querying() -> bool:
        seen.append(api.tasks.GetTask(pb.GetTaskRequest(id=task.id), timeout=TIMEOUT).task)
        assert seen[-1].state in (pb.TASK_STATE_PENDING, pb.TASK_STATE_RUNNING), seen[-1]
        return seen[-1].progress.message.startswith("running the query")

    wait_for(querying, timeout=60, message=f"the query to start running: {seen[-1:]}")
    asked = time.monotonic()
    api.tasks.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=TIMEOUT)
    final = watch_to_end(api.tasks, task.id, timeout=30)[-1].task
    took = time.monotonic() - asked
    assert final.state == pb.TASK_STATE_CANCELLED, final
    assert took < 2.0, f"cancelled after {took:.2f} s"


def test_damaged_bytes_fail_artifact_damaged_and_store_no_result(api: Api, tmp_path: Path) -> None:
    # The query runs while the file store's object is checked beside it (check ahead);
    # the result artifacts wait for the check, so a query over damaged bytes that still
    # parse publishes nothing and fails ARTIFACT_DAMAGED.
    path = tmp_path / "numbers.csv"
    path.write_text("n,m\n" + "".join(f"{i},{i % 10}\n" for i in range(200_000)))
    dataset = _upload(api.artifacts, api.project, path, apb.DATASET_FORMAT_CSV)
    damage_object(api.stack, dataset, path.read_bytes().index(b"\n123456,") + 1, b"7")
    spec = a.AnalyticsSpec(
        group_by=["m"], measures=[a.Measure(function=a.MEASURE_FUNCTION_SUM, column="n")]
    )
    final = _run(api, dataset, spec)
    assert final.state == pb.TASK_STATE_FAILED, final
    info = error_details_pb2.ErrorInfo()
    assert final.error.details[0].Unpack(info)
    assert info.reason == "ARTIFACT_DAMAGED", final.error.message
    assert final.attempt == 1
    listed = api.artifacts.ListArtifacts(
        apb.ListArtifactsRequest(project_id=api.project, page_size=100), timeout=TIMEOUT
    ).artifacts
    assert not [x.name for x in listed if final.id in x.name], "a result artifact was stored"


def test_a_long_query_reports_progress_every_two_seconds_or_five_percent(api: Api) -> None:
    spec = a.AnalyticsSpec(
        group_by=["k"],
        measures=[a.Measure(function=a.MEASURE_FUNCTION_COUNT_DISTINCT, column="v")],
    )
    events = watch_to_end(api.tasks, _submit(api, api.big, spec).id, timeout=120)
    assert events[-1].task.state == pb.TASK_STATE_SUCCEEDED, events[-1].task.error
    running = [e for e in events if e.state == pb.TASK_STATE_RUNNING]
    querying = [e for e in running if e.progress.message.startswith("running the query")]
    assert len(querying) >= 2, [e.progress.message for e in running]  # DuckDB's own progress
    assert_progress_cadence(running)

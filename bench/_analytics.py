"""The analytics benchmark: one RunAnalytics query through the whole pipeline beside the
same statement in plain DuckDB in a plain process (issue #12).

A CSV of ``size_mib`` (generated here by DuckDB: ids, 50 categories, amounts, quantities,
timestamps over a year, short notes) is uploaded once. Then, in interleaved passes:

1. **pipeline**: SubmitAnalytics to SUCCEEDED through an API server and a
   ``python -m workers`` process (one pool child) on a private RabbitMQ vhost: the
   worker's fetch of the artifact (checked beside the query), DESCRIBE, the query, the
   Parquet and CSV result artifacts, the inline rows;
2. **plain DuckDB**: a fresh ``python`` process that connects DuckDB with the worker's
   memory limit and threads and runs the very statement ``workers._query`` builds for the
   spec, fetching its rows.

Throughput is the CSV's bytes over each path's wall time (best pass); the worker's peak
RSS is its pool child's VmHWM over the run (``bench._artifacts_memory.PeakMeter``).
Targets: pipeline >= 0.8x plain DuckDB's MB/s, and the worker's peak RSS under the DuckDB
memory limit + 256 MiB.

``measure_analytics(database_url, workdir, plan, progress)`` returns the figures and their
Markdown; ``python -m bench._analytics [--quick]`` starts its own stack (a fresh
PostgreSQL database, a private vhost) and prints the section.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import grpc
from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2, projects_pb2_grpc
from agentic.tasks.v1 import analytics_pb2 as a
from agentic.tasks.v1 import datasets_pb2 as d
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc

from bench._artifacts_memory import PeakMeter
from bench._tables import section_tail, table, verdict
from tests._identity import dev_keys
from tests._support import postgres_database
from tests.server.artifacts._bytestream import sha256_file, write_requests
from tests.workers._stack import Stack, private_vhost, stack, watch_to_end
from workers._duckdb import source
from workers._query import SourceColumn, build_query

__all__ = ["QUICK", "AnalyticsFigures", "AnalyticsPlan", "measure_analytics"]

_MIB = 1024 * 1024
_CALL_TIMEOUT_SECONDS = 60.0
_RSS_HEADROOM_MIB = 256
_RATIO_TARGET = 0.8
Progress = Callable[[str], None]


@dataclass(frozen=True)
class AnalyticsPlan:
    """How much the analytics section does."""

    size_mib: int = 512
    passes: int = 3
    memory_limit_mib: int = 1024
    """AGENTIC_DUCKDB_MEMORY_LIMIT_MIB of the worker, and the plain process's limit."""
    threads: int = 0
    """AGENTIC_DUCKDB_THREADS of the worker and the plain process; 0: every CPU."""
    task_timeout_seconds: float = 600.0

    def describe(self) -> str:
        """One line for the report."""
        return (
            f"a {self.size_mib} MiB CSV, one group-by query (category x week, 6 measures, "
            f"2 filters), best of {self.passes} interleaved passes, DuckDB memory limit "
            f"{self.memory_limit_mib} MiB and {self._threads()} threads on both paths"
        )

    def _threads(self) -> int:
        return self.threads or len(os.sched_getaffinity(0))


QUICK = AnalyticsPlan(size_mib=64, passes=2)
"""``--quick``: a 64 MiB CSV, two passes."""


@dataclass(frozen=True)
class AnalyticsFigures:
    """What the section measured, and its Markdown (``markdown``)."""

    plan: AnalyticsPlan
    size_bytes: int
    source_rows: int
    result_rows: int
    pipeline_seconds: list[float]
    """Submit to SUCCEEDED, each pass."""
    stages: list[dict[str, float]]
    """Seconds by stage of the attempt (from its progress events), each pass."""
    plain_seconds: list[float]
    """The plain DuckDB process's query, each pass."""
    plain_process_seconds: list[float]
    """The plain process from spawn to exit (interpreter and import included), each pass."""
    worker_peak_mib: float | None
    plain_peak_mib: float | None
    copy_seconds: float
    """Checking the CSV (read and sha256) in the benchmark process."""
    same_rows: bool
    """The pipeline's inline rows equal the plain process's first rows."""
    notes: list[str] = field(default_factory=list)

    @property
    def pipeline_mb_s(self) -> float:
        """Best pass, decimal MB/s of the source CSV."""
        return self.size_bytes / min(self.pipeline_seconds) / 1e6

    @property
    def plain_mb_s(self) -> float:
        """Best pass of the plain DuckDB query."""
        return self.size_bytes / min(self.plain_seconds) / 1e6

    @property
    def ratio(self) -> float:
        """Pipeline throughput over plain DuckDB's."""
        return self.pipeline_mb_s / self.plain_mb_s

    @property
    def rss_limit_mib(self) -> float:
        """The RSS target: DuckDB's memory limit plus the headroom."""
        return self.plan.memory_limit_mib + _RSS_HEADROOM_MIB

    def checks(self, *, markdown: bool) -> list[str]:
        """The targets with their verdicts."""
        rss_ok = None if self.worker_peak_mib is None else self.worker_peak_mib < self.rss_limit_mib
        rows = [
            [
                "pipeline throughput / plain DuckDB",
                f"{self.ratio:.2f}x ({self.pipeline_mb_s:.0f} vs {self.plain_mb_s:.0f} MB/s)",
                f">= {_RATIO_TARGET}x",
                verdict(self.ratio >= _RATIO_TARGET),
            ],
            [
                "worker peak RSS",
                "-" if self.worker_peak_mib is None else f"{self.worker_peak_mib:.0f} MiB",
                f"< {self.rss_limit_mib:.0f} MiB (memory limit + {_RSS_HEADROOM_MIB})",
                verdict(rss_ok),
            ],
            [
                "plain DuckDB process peak RSS",
                "-" if self.plain_peak_mib is None else f"{self.plain_peak_mib:.0f} MiB",
                "for scale",
                verdict(None),
            ],
        ]
        return table(["target", "measured", "target", "verdict"], rows, markdown=markdown)

    def where(self) -> list[str]:
        """Where the pipeline's time goes, from this run's figures."""
        best = self.pipeline_seconds.index(min(self.pipeline_seconds))
        stages = self.stages[best]
        plain = min(self.plain_seconds)
        parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in stages.items())
        return [
            f"- the best pipeline pass, {self.pipeline_seconds[best]:.2f} s, by stage (from "
            f"the task's progress events): {parts};",
            f"- the plain query took {plain:.2f} s at best (each pass: "
            + " ".join(f"{s:.2f}" for s in self.plain_seconds)
            + f"); checking the artifact alone costs about {self.copy_seconds:.2f} s here "
            f"(read + sha256 of {self.size_bytes / _MIB:.0f} MiB in the benchmark process), "
            "work plain DuckDB does not do: the worker reads the file store's object through "
            "a hard link and checks it in a thread beside the query (the result artifacts "
            "wait for the check), so it costs CPU beside the query rather than a stage "
            "before it;",
            f"- the plain process itself took {min(self.plain_process_seconds):.2f} s from "
            "spawn to exit (the interpreter and `import duckdb` included; its figure above is "
            "the query alone).",
        ]

    def markdown(self) -> list[str]:
        """The section as Markdown."""
        return self._render(markdown=True)

    def console(self) -> list[str]:
        """The section as aligned console text."""
        return self._render(markdown=False)

    def _render(self, *, markdown: bool) -> list[str]:
        figures = table(
            ["path", "MB/s (best)", "seconds (each pass)", "peak RSS MiB"],
            [
                [
                    "pipeline (submit to SUCCEEDED)",
                    f"{self.pipeline_mb_s:.0f}",
                    " ".join(f"{s:.2f}" for s in self.pipeline_seconds),
                    "-" if self.worker_peak_mib is None else f"{self.worker_peak_mib:.0f}",
                ],
                [
                    "plain DuckDB (the same statement)",
                    f"{self.plain_mb_s:.0f}",
                    " ".join(f"{s:.2f}" for s in self.plain_seconds),
                    "-" if self.plain_peak_mib is None else f"{self.plain_peak_mib:.0f}",
                ],
            ],
            markdown=markdown,
        )
        sanity = [
            f"the CSV: {self.size_bytes / _MIB:.0f} MiB, {self.source_rows:,} rows; the "
            f"result: {self.result_rows} rows",
            "the pipeline's inline rows equal the plain process's first rows"
            if self.same_rows
            else "the pipeline's inline rows DIFFER from the plain process's",
            *self.notes,
        ]
        return [
            self.plan.describe() + ".",
            "",
            *figures,
            "",
            *section_tail(self.checks(markdown=markdown), self.where(), sanity, _HOW, _CAVEATS),
        ]


_HOW = (
    "Pipeline: the benchmark submits `SubmitAnalytics` and watches the task to its end; the "
    "figure is the wall time from the submit call to the SUCCEEDED event. Plain DuckDB: a "
    "fresh `python` process connects `duckdb` with the same memory limit and threads and "
    "times `execute(sql, params).fetchall()` of the statement `workers._query.build_query` "
    "makes of the same spec over the same file. MB/s are the CSV's bytes (10^6) over those "
    "seconds, best pass. The worker's peak RSS is the VmHWM of its single pool child, reset "
    "before each pass (`/proc/<pid>/clear_refs`) and sampled every 10 ms.\n"
)
_CAVEATS = (
    "One machine runs the API server, the worker, PostgreSQL, RabbitMQ and the client; "
    "the worker reads a local file store, so the artifact is a hard link checked by one "
    "read beside the query (an S3 store would add the download, checked as it streams). "
    "The page cache holds the CSV for both paths after the first pass.\n"
)


def _spec() -> a.AnalyticsSpec:
    return a.AnalyticsSpec(
        group_by=["category"],
        time_bucket=a.TimeBucket(column="ts", granularity=a.TIME_GRANULARITY_WEEK),
        measures=[
            a.Measure(function=a.MEASURE_FUNCTION_COUNT),
            a.Measure(function=a.MEASURE_FUNCTION_SUM, column="amount"),
            a.Measure(function=a.MEASURE_FUNCTION_AVG, column="quantity"),
            a.Measure(function=a.MEASURE_FUNCTION_MAX, column="amount"),
            a.Measure(function=a.MEASURE_FUNCTION_P95, column="amount"),
            a.Measure(function=a.MEASURE_FUNCTION_COUNT_DISTINCT, column="quantity"),
        ],
        filters=[
            a.Filter(column="amount", operator=a.FILTER_OPERATOR_GE, value=d.Value(int_value=5)),
            a.Filter(column="note", operator=a.FILTER_OPERATOR_IS_NOT_NULL),
        ],
        order_by=[a.OrderBy(column="sum_amount", descending=True)],
    )


_ROW_BYTES = 55  # about what one generated row takes in the CSV


def _make_csv(path: Path, size_bytes: int) -> int:
    """Write a CSV of about ``size_bytes``; its row count."""
    rows = size_bytes // _ROW_BYTES
    connection = duckdb.connect(":memory:")
    connection.execute(
        "COPY (SELECT range AS id, 'category-' || (hash(range) % 50) AS category, "
        "round((hash(range * 3) % 1000000) / 1000.0, 3) AS amount, "
        "(hash(range * 7) % 1000)::BIGINT AS quantity, "
        "TIMESTAMP '2024-01-01' + to_seconds((hash(range * 11) % 31536000)::BIGINT) AS ts, "
        "CASE WHEN range % 17 = 0 THEN NULL ELSE 'n' || (range % 997) END AS note "
        "FROM range(?)) TO ? (FORMAT csv, HEADER true)",
        [rows, str(path)],
    )
    connection.close()
    return rows


_PLAIN = """
import json, resource, sys, time
import duckdb
job = json.loads(sys.argv[1])
connection = duckdb.connect(":memory:", config={
    "memory_limit": f"{job['memory_mib']}MB", "threads": job["threads"]})
connection.execute("SET TimeZone = 'UTC'")
connection.execute("SET enable_progress_bar = false")
begin = time.perf_counter()
rows = connection.execute(job["sql"], job["params"]).fetchall()
seconds = time.perf_counter() - begin
print(json.dumps({"seconds": seconds, "rows": len(rows), "first": repr(rows[:5]),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _plain(plan: AnalyticsPlan, path: Path) -> tuple[float, float, float, int, str]:
    """One plain DuckDB run: query seconds, process seconds, peak MiB, rows, first rows."""
    reader = source("csv")
    connection = duckdb.connect(":memory:")
    columns = [
        SourceColumn(str(r[0]), str(r[1]))
        for r in connection.execute(f"DESCRIBE SELECT * FROM {reader}", [str(path)]).fetchall()
    ]
    connection.close()
    query = build_query(_spec(), columns, reader, [str(path)])
    job = {
        "sql": query.sql,
        "params": list(query.params),
        "memory_mib": plan.memory_limit_mib,
        "threads": plan._threads(),
    }
    begin = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PLAIN, json.dumps(job)],
        check=True,
        capture_output=True,
        text=True,
        timeout=plan.task_timeout_seconds,
    )
    process = time.perf_counter() - begin
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return out["seconds"], process, out["peak_mib"], out["rows"], out["first"]


def _upload(stub: artifacts_pb2_grpc.ArtifactServiceStub, project: str, path: Path) -> str:
    created = stub.CreateUpload(
        apb.CreateUploadRequest(
            project_id=project,
            name=path.name,
            kind=apb.ARTIFACT_KIND_DATASET,
            content_type="text/csv",
            format=apb.DATASET_FORMAT_CSV,
            size_bytes=path.stat().st_size,
            sha256=sha256_file(path),
        ),
        timeout=_CALL_TIMEOUT_SECONDS,
    )
    with path.open("rb") as data:
        stub.Write(write_requests(data, created.upload_name), timeout=600)
    return str(created.artifact.id)


def _copy_seconds(path: Path) -> float:
    """What the worker's verified fetch costs on the file store: read and sha256 the file
    once (the worker reads the object through a hard link, no copy)."""
    begin = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as source_file:
        while piece := source_file.read(_MIB):
            digest.update(piece)
    return time.perf_counter() - begin


def _pool_child(worker_pid: int) -> int | None:
    try:
        children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


@dataclass
class _Pipeline:
    tasks: tasks_pb2_grpc.TaskServiceStub
    project: str
    dataset: str
    child: int | None
    timeout: float

    def run(self) -> tuple[float, dict[str, float], pb.Task, float | None]:
        """One task: submit-to-end seconds, seconds by stage, the task, the child's peak."""
        spec = a.AnalyticsSpec()
        spec.CopyFrom(_spec())
        spec.dataset.artifact_id = self.dataset
        request = pb.SubmitAnalyticsRequest(
            request_id=str(uuid.uuid4()), project_id=self.project, analytics=spec
        )
        meter = PeakMeter(self.child) if self.child is not None else None
        if meter is not None:
            meter.__enter__()
        try:
            begin = time.perf_counter()
            task = self.tasks.SubmitAnalytics(request, timeout=_CALL_TIMEOUT_SECONDS).task
            events = watch_to_end(self.tasks, task.id, timeout=self.timeout)
            seconds = time.perf_counter() - begin
            final = events[-1].task
        finally:
            if meter is not None:
                meter.__exit__()
        if final.state != pb.TASK_STATE_SUCCEEDED:
            raise RuntimeError(f"the benchmark's analytics task ended {final}")
        return seconds, _stages(events), final, meter.peak_mib if meter is not None else None


# The worker's progress messages that open each stage (workers/analytics.py).
_STAGES = (
    ("fetching the dataset", "fetch (the hard link; its check runs beside the query)"),
    ("reading the columns", "DESCRIBE and the query"),
    ("writing the result files", "result files"),
    ("storing the result", "result artifacts and the final write"),
)


def _stages(events: list[pb.TaskEvent]) -> dict[str, float]:
    """Seconds per stage, from the first event of each stage to the next stage's."""
    starts: dict[str, float] = {}
    for event in events:
        for message, stage in _STAGES:
            if event.task.progress.message == message and stage not in starts:
                starts[stage] = event.time.ToNanoseconds() / 1e9
    end = events[-1].time.ToNanoseconds() / 1e9
    marks = [starts.get(stage) for _, stage in _STAGES] + [end]
    out = {}
    for index, (_, stage) in enumerate(_STAGES):
        begin, after = marks[index], next((m for m in marks[index + 1 :] if m), None)
        if begin is not None and after is not None:
            out[stage] = after - begin
    start = events[0].task.create_time.ToNanoseconds() / 1e9
    first = starts.get(_STAGES[0][1])
    if first is not None:
        out["submit to start"] = first - start
    return out


def _start(s: Stack, plan: AnalyticsPlan) -> _Pipeline:
    s.start_server()
    worker = s.start_worker(
        concurrency=1,
        AGENTIC_DUCKDB_MEMORY_LIMIT_MIB=str(plan.memory_limit_mib),
        AGENTIC_DUCKDB_THREADS=str(plan._threads()),
        AGENTIC_CLAIM_LEASE_SECONDS="30",
        # On PostgreSQL the task thread and the watchdog each keep a pooled connection, so
        # the default pool of 2 leaves none for the DuckDB watcher's progress reports and
        # the output store's transaction (they wait 30 s for one, then fail): 4 covers all.
        AGENTIC_DB_POOL_SIZE="4",
    )
    channel: grpc.Channel = s.channels[0]
    project = projects_pb2_grpc.ProjectServiceStub(channel).CreateProject(
        projects_pb2.CreateProjectRequest(
            project=projects_pb2.Project(name=f"bench-analytics-{uuid.uuid4().hex[:8]}")
        ),
        timeout=_CALL_TIMEOUT_SECONDS,
    )
    return _Pipeline(
        tasks=tasks_pb2_grpc.TaskServiceStub(channel),
        project=project.project.id,
        dataset="",
        child=_pool_child(worker.process.pid),
        timeout=plan.task_timeout_seconds,
    )


def _inline_first(task: pb.Task) -> list[tuple[object, ...]]:
    rows = []
    for row in task.analytics_result.rows[:5]:
        cells: list[object] = []
        for cell in row.cells:
            kind = cell.WhichOneof("kind")
            if kind == "timestamp_value":
                cells.append(cell.timestamp_value.ToDatetime())
            elif kind == "null_value":
                cells.append(None)
            else:
                cells.append(getattr(cell, str(kind)))
        rows.append(tuple(cells))
    return rows


def measure_analytics(
    database_url: str, workdir: Path, plan: AnalyticsPlan, progress: Progress
) -> AnalyticsFigures:
    """Generate the CSV, start the stack, run the passes, stop everything; the figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    csv_path = workdir / "analytics.csv"
    try:
        progress(f"analytics: writing a {plan.size_mib} MiB CSV")
        source_rows = _make_csv(csv_path, plan.size_mib * _MIB)
        size = csv_path.stat().st_size
        copy = _copy_seconds(csv_path)
        with private_vhost() as broker, stack(workdir / "stack", broker, database_url) as s:
            progress("analytics: API server and worker")
            pipeline = _start(s, plan)
            artifacts = artifacts_pb2_grpc.ArtifactServiceStub(s.channels[0])
            progress("analytics: uploading the CSV")
            pipeline.dataset = _upload(artifacts, pipeline.project, csv_path)
            totals: list[float] = []
            stages: list[dict[str, float]] = []
            plains: list[float] = []
            processes: list[float] = []
            peaks: list[float] = []
            plain_peaks: list[float] = []
            final: pb.Task | None = None
            first = ""
            for number in range(plan.passes):
                progress(f"analytics: pass {number + 1} of {plan.passes}")
                seconds, process, plain_peak, _, first = _plain(plan, csv_path)
                plains.append(seconds)
                processes.append(process)
                plain_peaks.append(plain_peak)
                total, stage, final, peak = pipeline.run()
                totals.append(total)
                stages.append(stage)
                if peak is not None:
                    peaks.append(peak)
        assert final is not None
        notes = []
        if pipeline.child is None:
            notes.append("the worker's pool child was not found: no RSS figure")
        return AnalyticsFigures(
            plan=plan,
            size_bytes=size,
            source_rows=source_rows,
            result_rows=final.analytics_result.row_count,
            pipeline_seconds=totals,
            stages=stages,
            plain_seconds=plains,
            plain_process_seconds=processes,
            worker_peak_mib=max(peaks) if peaks else None,
            plain_peak_mib=max(plain_peaks) if plain_peaks else None,
            copy_seconds=copy,
            same_rows=repr(_inline_first(final)) == first,
            notes=notes,
        )
    finally:
        csv_path.unlink(missing_ok=True)


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the section alone on a fresh database and print it."""
    parser = argparse.ArgumentParser(prog="python -m bench._analytics", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 64 MiB CSV, two passes")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else AnalyticsPlan()
    with (
        tempfile.TemporaryDirectory(prefix="agentic-bench-analytics-") as tmp,
        postgres_database(Path(tmp) / "postgres") as database_url,
    ):
        figures = measure_analytics(database_url, Path(tmp) / "analytics", plan, _progress)
    shutil.rmtree(dev_keys().directory, ignore_errors=True)  # the servers' trusted keys
    print("\n".join(figures.console()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

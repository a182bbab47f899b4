"""The three dataset kinds through real workers on PostgreSQL, with the worker's default pool.

The kinds' own tests run on SQLite; on PostgreSQL each worker thread keeps a pooled
connection (the task's and the watchdog's), and a kind that needed a third one (an output
artifact's row, a progress report from a helper thread) waited out the pool's timeout and
crashed. One small traceability export serves all three kinds; every expectation is
computed here from the rows written.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.compliance.v1 import rule_sets_pb2, rule_sets_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import analytics_pb2 as apy
from agentic.tasks.v1 import compliance_report_pb2 as cpb
from agentic.tasks.v1 import profile_dataset_pb2 as prof
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.protobuf.message import Message

from tests._identity import authorized_channel
from tests._support import postgres_database
from tests.server.artifacts._bytestream import download, upload
from tests.workers._stack import TIMEOUT, Stack, private_vhost, stack, watch_to_end

ROWS = [
    ("R1", "requirement", "", "T1", ""),
    ("R2", "requirement", "R1", "", ""),
    ("D1", "design", "R1", "", ""),
    ("T1", "test", "", "R1", ""),
    ("TR1", "test-result", "T1", "", "passed"),
    ("TR2", "test-result", "T1", "", "failed"),
]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server and one worker (default database pool) on PostgreSQL."""
    workdir = tmp_path_factory.mktemp("kinds-pg")
    with (
        postgres_database(workdir) as database_url,
        private_vhost() as broker,
        stack(workdir, broker, database_url) as s,
    ):
        s.start_server()
        s.start_worker(concurrency=1)
        yield s


def _export(path: Path) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["item_id", "item_type", "parent_id", "linked_ids", "status"])
        writer.writerows(ROWS)
    return path


def _upload(artifacts: artifacts_pb2_grpc.ArtifactServiceStub, project: str, path: Path) -> str:
    return str(upload(artifacts, project, path, name=path.name).id)


def _run(tasks: tasks_pb2_grpc.TaskServiceStub, kind: str, project: str, spec: Message) -> pb.Task:
    """Submit<Kind> with ``spec`` and watch the task to its end, which must be SUCCEEDED."""
    method = "Submit" + "".join(part.capitalize() for part in kind.split("_"))
    request = getattr(pb, f"{method}Request")(
        request_id=str(uuid.uuid4()), project_id=project, **{kind: spec}
    )
    task = getattr(tasks, method)(request, timeout=TIMEOUT).task
    final = watch_to_end(tasks, task.id, timeout=60.0)[-1].task
    assert final.state == pb.TASK_STATE_SUCCEEDED, final.error
    return final


def _bytes(artifacts: artifacts_pb2_grpc.ArtifactServiceStub, artifact_id: str) -> bytes:
    out = io.BytesIO()
    download(artifacts, artifact_id, out)
    return out.getvalue()


def test_every_dataset_kind_succeeds_on_postgresql(pipeline: Stack, tmp_path: Path) -> None:
    channel = authorized_channel(pipeline.servers[0].address)
    try:
        tasks = tasks_pb2_grpc.TaskServiceStub(channel)
        artifacts = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        project = (
            projects_pb2_grpc.ProjectServiceStub(channel)
            .CreateProject(
                ppb.CreateProjectRequest(project=ppb.Project(name=f"pg-{uuid.uuid4().hex[:8]}")),
                timeout=TIMEOUT,
            )
            .project.id
        )
        dataset = _upload(artifacts, project, _export(tmp_path / "trace.csv"))
        ref = apb.ArtifactRef(artifact_id=dataset)

        profiled = _run(
            tasks, "profile_dataset", project, prof.ProfileDatasetSpec(dataset=ref)
        ).profile_dataset_result
        assert profiled.profile.row_count == len(ROWS)
        assert [c.column.name for c in profiled.profile.columns] == [
            "item_id",
            "item_type",
            "parent_id",
            "linked_ids",
            "status",
        ]
        page = _bytes(artifacts, profiled.report_artifact_id).decode()
        assert "<html" in page.lower()
        assert all(name in page for name in ("item_id", "linked_ids", "status"))

        query = apy.AnalyticsSpec(
            dataset=ref,
            group_by=["item_type"],
            measures=[apy.Measure(function=apy.MEASURE_FUNCTION_COUNT)],
        )
        counted = _run(tasks, "analytics", project, query).analytics_result
        got = {row.cells[0].string_value: row.cells[1].int_value for row in counted.rows}
        assert got == Counter(row[1] for row in ROWS)
        csv_rows = list(
            csv.reader(io.StringIO(_bytes(artifacts, counted.csv_artifact_id).decode()))
        )
        assert len(csv_rows) == 1 + len(got)

        aspice = (
            rule_sets_pb2_grpc.RuleSetServiceStub(channel)
            .GetRuleSet(rule_sets_pb2.GetRuleSetRequest(id="aspice-3.1"), timeout=TIMEOUT)
            .rule_set
        )
        report = _run(
            tasks, "compliance_report", project, cpb.ComplianceReportSpec(traceability=ref)
        ).compliance_report_result
        # The project has no documents: every process misses every work product.
        assert [(p.process_id, p.status) for p in report.processes] == [
            (p.id, cpb.PROCESS_STATUS_MISSING) for p in aspice.processes
        ]
        assert report.totals.traceability_items == len(ROWS)
        assert _bytes(artifacts, report.pdf_artifact_id).startswith(b"%PDF")
    finally:
        channel.close()

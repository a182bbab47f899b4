"""ComplianceReport end to end: real API server, cache sidecar, memcached and worker.

A fixture project gets DOCUMENT artifacts uploaded through ArtifactService with their
work-product tags (one upload left unfinished, one document in another project: neither
counts) and a traceability export with known gaps. The expected report is computed here
from that construction and the rule set as GetRuleSet returns it, never from the worker's
code: per process, the missing work products, the findings (rule and items) and the
status. The worker reads custom rule sets through the same sidecar the server invalidates,
so a report submitted after UpdateRuleSet returned must see the new version.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc

# pyarrow ships no type information.
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pypdf
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc
from agentic.compliance.v1 import rule_sets_pb2 as rpb
from agentic.compliance.v1 import rule_sets_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import compliance_report_pb2 as cpb
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from tests._identity import authorized_channel
from tests._processes import Memcached, Service, free_port, start_sidecar
from tests._support import REPO
from tests.server.artifacts._bytestream import download, upload, write_requests
from tests.workers._stack import (
    TIMEOUT,
    Stack,
    assert_progress_cadence,
    private_vhost,
    stack,
    watch_to_end,
)
from workers._cache_reader import CacheReader, CacheSettings
from workers._rule_sets import RuleSets

POLICY = REPO / "cache_sidecar" / "namespaces.toml"
TERMINAL = {pb.TASK_STATE_SUCCEEDED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED}
C = rpb.Check


@dataclass
class Env:
    stack: Stack
    sidecar: Service
    tasks: tasks_pb2_grpc.TaskServiceStub
    artifacts: artifacts_pb2_grpc.ArtifactServiceStub
    projects: projects_pb2_grpc.ProjectServiceStub
    rule_sets: rule_sets_pb2_grpc.RuleSetServiceStub
    cache: cache_pb2_grpc.CacheServiceStub


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """memcached <- sidecar <- API server and one worker, on a SQLite database; a cancel
    grace long enough that only the interrupt of a running statement ends one in time."""
    workdir = tmp_path_factory.mktemp("compliance")
    memcached = Memcached(free_port(), workdir / "memcached.log")
    memcached.start()
    try:
        sidecar = start_sidecar(workdir / "sidecar", [memcached], POLICY)
        try:
            with (
                private_vhost() as broker,
                stack(
                    workdir,
                    broker,
                    f"sqlite:///{workdir / 'tasks.db'}",
                    AGENTIC_CANCEL_GRACE_SECONDS="30",
                ) as s,
            ):
                s.start_server(AGENTIC_CACHE_ADDRESS=sidecar.address)
                s.start_worker(concurrency=1, AGENTIC_CACHE_ADDRESS=sidecar.address)
                channel = authorized_channel(s.servers[0].address)
                cache_channel = grpc.insecure_channel(sidecar.address)
                try:
                    yield Env(
                        stack=s,
                        sidecar=sidecar,
                        tasks=tasks_pb2_grpc.TaskServiceStub(channel),
                        artifacts=artifacts_pb2_grpc.ArtifactServiceStub(channel),
                        projects=projects_pb2_grpc.ProjectServiceStub(channel),
                        rule_sets=rule_sets_pb2_grpc.RuleSetServiceStub(channel),
                        cache=cache_pb2_grpc.CacheServiceStub(cache_channel),
                    )
                finally:
                    cache_channel.close()
                    channel.close()
        finally:
            sidecar.stop()
    finally:
        memcached.stop()


def _project(env: Env) -> str:
    response = env.projects.CreateProject(
        ppb.CreateProjectRequest(project=ppb.Project(name=f"p-{uuid.uuid4().hex[:8]}")),
        timeout=TIMEOUT,
    )
    return str(response.project.id)


def _document(
    env: Env, project: str, name: str, tags: list[str], *, finish: bool = True
) -> apb.Artifact:
    data = f"%PDF-1.4 stand-in for {name}\n".encode()
    created = env.artifacts.CreateUpload(
        apb.CreateUploadRequest(
            project_id=project,
            name=name,
            kind=apb.ARTIFACT_KIND_DOCUMENT,
            content_type="application/pdf",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            work_products=tags,
        ),
        timeout=TIMEOUT,
    )
    if finish:
        env.artifacts.Write(write_requests(io.BytesIO(data), created.upload_name), timeout=TIMEOUT)
    artifact: apb.Artifact = created.artifact
    return artifact


def _export(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _item(
    item_id: str, item_type: str, parent: str = "", linked: str = "", status: str = ""
) -> dict[str, str]:
    # Columns in another order than the documented one, and one more: both allowed.
    return {
        "status": status,
        "item_type": item_type,
        "item_id": item_id,
        "title": f"the {item_type} {item_id}",
        "linked_ids": linked,
        "parent_id": parent,
    }


# The export's known gaps (the expectations below are read off this list):
#   SR-1 is a top-level requirement (no parent) and no test links it;
#   R-2's parent R-404 is not in the export, and no test links R-2;
#   D-2 links no requirement; T-2 has no result; TR-2 failed and links T-999 (absent).
TRACE = [
    _item("SR-1", "requirement", status="approved"),
    _item("R-1", "requirement", parent="SR-1", linked="T-1"),
    _item("R-2", "requirement", parent="R-404"),
    _item("D-1", "design", linked="R-1"),
    _item("D-2", "design"),
    _item("T-1", "test", linked="R-1"),
    _item("T-2", "test"),
    _item("TR-1", "test-result", parent="T-1", status="passed"),
    _item("TR-2", "test-result", linked="T-2, T-999", status="failed"),
]
EXPECTED_ITEMS = {
    C.CHECK_REQUIREMENT_HAS_PARENT: ("requirement.no_parent", ["SR-1"]),
    C.CHECK_REQUIREMENT_HAS_TEST: ("requirement.no_test", ["R-2", "SR-1"]),
    C.CHECK_TEST_HAS_RESULT: ("test.no_result", []),  # T-2 has TR-2 (failed, but a result)
    C.CHECK_TEST_RESULT_PASSED: ("test_result.failed", ["TR-2"]),
    C.CHECK_LINKS_RESOLVE: ("link.dangling", ["R-2", "TR-2"]),
    C.CHECK_DESIGN_HAS_REQUIREMENT: ("design.no_requirement", ["D-2"]),
}
ERRORS = {"test_result.failed", "link.dangling", "work_product.missing"}
TAGS = {
    "srs.pdf": ["17-11", "17-08"],
    "arch.pdf": ["04-04"],
    "tests.pdf": ["08-50", "08-52", "13-50"],
}


@dataclass
class Fixture:
    project: str
    trace_id: str
    provided: set[str]


@pytest.fixture(scope="module")
def fixture(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    project = _project(env)
    for name, tags in TAGS.items():
        _document(env, project, name, tags)
    _document(env, project, "draft.pdf", ["13-22"], finish=False)  # never READY
    _document(env, _project(env), "elsewhere.pdf", ["08-12"])  # another project's
    trace = upload(
        env.artifacts,
        project,
        _export(tmp_path_factory.mktemp("trace") / "t.csv", TRACE),
        name="trace.csv",
    )
    return Fixture(
        project=project, trace_id=trace.id, provided={t for tags in TAGS.values() for t in tags}
    )


def _submit(env: Env, project: str, spec: cpb.ComplianceReportSpec) -> pb.Task:
    final = watch_to_end(
        env.tasks,
        env.tasks.SubmitComplianceReport(
            pb.SubmitComplianceReportRequest(
                request_id=str(uuid.uuid4()), project_id=project, compliance_report=spec
            ),
            timeout=TIMEOUT,
        ).task.id,
        timeout=60,
    )[-1].task
    return final


def _succeeded(
    env: Env, project: str, spec: cpb.ComplianceReportSpec
) -> cpb.ComplianceReportResult:
    final = _submit(env, project, spec)
    assert final.state == pb.TASK_STATE_SUCCEEDED, final.error
    return final.compliance_report_result


def _error(task: pb.Task) -> error_details_pb2.ErrorInfo:
    assert task.state == pb.TASK_STATE_FAILED, task
    info = error_details_pb2.ErrorInfo()
    assert task.error.details[0].Unpack(info)
    return info


def _expected(
    rule_set: rpb.RuleSet, provided: set[str], traced: bool
) -> dict[str, tuple[int, list[str], list[tuple[str, str, list[str]]]]]:
    """process id -> (status, missing work products, sorted (rule, work product, items))."""
    out: dict[str, tuple[int, list[str], list[tuple[str, str, list[str]]]]] = {}
    for process in rule_set.processes:
        missing = [w.id for w in process.work_products if w.id not in provided]
        findings: list[tuple[str, str, list[str]]] = [
            ("work_product.missing", w, []) for w in missing
        ]
        if traced:
            for check in process.checks:
                rule, items = EXPECTED_ITEMS[check]
                if items:
                    findings.append((rule, "", items))
        elif process.checks:
            findings.append(("traceability.not_checked", "", []))
        expected_count = len(process.work_products)
        if expected_count and len(missing) == expected_count:
            status = cpb.PROCESS_STATUS_MISSING
        elif missing or any(rule in ERRORS for rule, _, _ in findings):
            status = cpb.PROCESS_STATUS_PARTIAL
        else:
            status = cpb.PROCESS_STATUS_COMPLIANT
        out[process.id] = (status, missing, sorted(findings))
    return out


def _actual(
    result: cpb.ComplianceReportResult,
) -> dict[str, tuple[int, list[str], list[tuple[str, str, list[str]]]]]:
    return {
        p.process_id: (
            p.status,
            list(p.missing_work_products),
            sorted((f.rule, f.work_product_id, list(f.item_ids)) for f in p.findings),
        )
        for p in result.processes
    }


def _aspice(env: Env) -> rpb.RuleSet:
    rule_set: rpb.RuleSet = env.rule_sets.GetRuleSet(
        rpb.GetRuleSetRequest(id="aspice-3.1"), timeout=TIMEOUT
    ).rule_set
    return rule_set


def test_the_report_lists_exactly_the_gaps(env: Env, fixture: Fixture, tmp_path: Path) -> None:
    aspice = _aspice(env)
    spec = cpb.ComplianceReportSpec(traceability=apb.ArtifactRef(artifact_id=fixture.trace_id))
    result = _succeeded(env, fixture.project, spec)

    assert result.rule_set_id == "aspice-3.1"
    assert result.rule_set_version == aspice.version
    assert [p.process_id for p in result.processes] == [p.id for p in aspice.processes]
    assert _actual(result) == _expected(aspice, fixture.provided, traced=True)
    # Coverage from the export's construction: requirements SR-1, R-1, R-2 (only R-1 has a
    # parent that is there, and only R-1 a test); tests T-1, T-2 both have a result;
    # designs D-1 (links R-1) and D-2.
    assert [(c.level, c.items, c.covered) for c in result.coverage] == [
        ("requirement->parent", 3, 1),
        ("requirement->test", 3, 1),
        ("test->result", 2, 2),
        ("design->requirement", 2, 1),
    ]
    expected_products = sum(len(p.work_products) for p in aspice.processes)
    provided = sum(1 for p in aspice.processes for w in p.work_products if w.id in fixture.provided)
    totals = result.totals
    assert (totals.expected_work_products, totals.provided_work_products) == (
        expected_products,
        provided,
    )
    assert totals.traceability_items == len(TRACE)
    assert totals.processes == len(aspice.processes)
    assert totals.compliant + totals.partial + totals.missing == totals.processes

    # The two reports are documents of the project; both download and open.
    html_artifact = env.artifacts.GetArtifact(
        apb.GetArtifactRequest(id=result.html_artifact_id), timeout=TIMEOUT
    ).artifact
    assert (html_artifact.kind, html_artifact.content_type, html_artifact.project_id) == (
        apb.ARTIFACT_KIND_DOCUMENT,
        "text/html",
        fixture.project,
    )
    page = io.BytesIO()
    download(env.artifacts, result.html_artifact_id, page)
    text = page.getvalue().decode("utf-8")
    assert text.startswith("<!DOCTYPE html>")
    for process in aspice.processes:
        assert f"<h3>{process.id} " in text
    pdf = io.BytesIO()
    download(env.artifacts, result.pdf_artifact_id, pdf)
    reader = pypdf.PdfReader(pdf)
    assert len(reader.pages) > 0
    extracted = "".join(p.extract_text() for p in reader.pages)
    for process in aspice.processes:
        assert process.id in extracted
    assert "link.dangling" in extracted


def test_without_an_export_only_work_products_are_judged(env: Env, fixture: Fixture) -> None:
    aspice = _aspice(env)
    result = _succeeded(env, fixture.project, cpb.ComplianceReportSpec())
    assert _actual(result) == _expected(aspice, fixture.provided, traced=False)
    assert not result.coverage


def test_the_same_spec_gives_the_same_report(env: Env, fixture: Fixture) -> None:
    spec = cpb.ComplianceReportSpec(traceability=apb.ArtifactRef(artifact_id=fixture.trace_id))
    first = _succeeded(env, fixture.project, spec)
    second = _succeeded(env, fixture.project, spec)
    assert {first.html_artifact_id, first.pdf_artifact_id}.isdisjoint(
        {second.html_artifact_id, second.pdf_artifact_id}
    )  # one pair of outputs per task
    for result in (first, second):
        result.ClearField("html_artifact_id")
        result.ClearField("pdf_artifact_id")
    assert first == second


def _namespace_stats(env: Env) -> cache_pb2.NamespaceStats:
    stats = env.cache.Stats(cache_pb2.StatsRequest(), timeout=TIMEOUT)
    found: cache_pb2.NamespaceStats = next(
        n for n in stats.namespaces if n.namespace == "rule_sets"
    )
    return found


def test_a_report_after_an_update_uses_the_new_version(env: Env, fixture: Fixture) -> None:
    created = env.rule_sets.CreateRuleSet(
        rpb.CreateRuleSetRequest(
            rule_set=rpb.RuleSet(
                name=f"custom-{uuid.uuid4().hex[:8]}",
                processes=[
                    rpb.Process(
                        id="SWE.1",
                        name="Software Requirements Analysis",
                        work_products=[rpb.WorkProduct(id="17-11", name="SRS")],
                    )
                ],
            )
        ),
        timeout=TIMEOUT,
    ).rule_set
    spec = cpb.ComplianceReportSpec(rule_set_id=created.id)
    before = _namespace_stats(env)
    first = _succeeded(env, fixture.project, spec)
    assert (first.rule_set_version, [p.process_id for p in first.processes]) == ("1", ["SWE.1"])
    again = _succeeded(env, fixture.project, spec)
    assert again.rule_set_version == "1"
    # The worker reads through the sidecar: the first report's read filled the key, the
    # second one's was a hit.
    assert _namespace_stats(env).hits > before.hits

    updated = env.rule_sets.UpdateRuleSet(
        rpb.UpdateRuleSetRequest(
            id=created.id,
            rule_set=rpb.RuleSet(
                processes=[
                    *created.processes,
                    rpb.Process(
                        id="MAN.3",
                        name="Project Management",
                        work_products=[rpb.WorkProduct(id="08-12", name="Project plan")],
                    ),
                ]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["processes"]),
        ),
        timeout=TIMEOUT,
    ).rule_set
    assert updated.version == "2"
    after = _succeeded(env, fixture.project, spec)
    assert after.rule_set_version == "2"
    assert [(p.process_id, p.status) for p in after.processes] == [
        ("SWE.1", cpb.PROCESS_STATUS_COMPLIANT),
        ("MAN.3", cpb.PROCESS_STATUS_MISSING),  # 08-12 is only another project's
    ]


def test_an_unknown_rule_set_fails_the_task(env: Env, fixture: Fixture) -> None:
    for rule_set_id in (str(uuid.uuid4()), "aspice-9.9"):
        task = _submit(env, fixture.project, cpb.ComplianceReportSpec(rule_set_id=rule_set_id))
        info = _error(task)
        assert info.reason == "RULE_SET_NOT_FOUND"
        assert task.error.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert dict(info.metadata) == {"rule_set_id": rule_set_id}


@pytest.mark.parametrize(
    ("rows", "words", "metadata"),
    [
        (
            [{k: v for k, v in row.items() if k != "linked_ids"} for row in TRACE],
            "no column 'linked_ids'",
            {"column": "linked_ids"},
        ),
        (
            [*TRACE[:3], _item("X-1", "epic"), *TRACE[3:]],
            "data row 4 (item 'X-1'): item_type 'epic'",
            {"row": "4", "column": "item_type", "item_id": "X-1"},
        ),
        (
            [*TRACE, _item("TR-3", "test-result", parent="T-2", status="green")],
            "status 'green'",
            {"row": str(len(TRACE) + 1), "column": "status"},
        ),
    ],
    ids=["missing-column", "unknown-type", "unknown-status"],
)
def test_bad_traceability_data_fails_with_a_reason(
    env: Env,
    fixture: Fixture,
    tmp_path: Path,
    rows: list[dict[str, str]],
    words: str,
    metadata: dict[str, str],
) -> None:
    bad = upload(
        env.artifacts, fixture.project, _export(tmp_path / "bad.csv", rows), name="bad.csv"
    )
    task = _submit(
        env,
        fixture.project,
        cpb.ComplianceReportSpec(traceability=apb.ArtifactRef(artifact_id=bad.id)),
    )
    info = _error(task)
    assert info.reason == "TRACEABILITY_INVALID"
    assert words in task.error.message
    assert dict(info.metadata).items() >= metadata.items()


def test_the_worker_read_degrades_to_the_database(env: Env) -> None:
    """RuleSets, the worker's read, in this process against the stack's database: through
    the live sidecar, and with the sidecar's address dead (the database answers)."""
    created = env.rule_sets.CreateRuleSet(
        rpb.CreateRuleSetRequest(
            rule_set=rpb.RuleSet(
                name=f"degrade-{uuid.uuid4().hex[:8]}",
                processes=[rpb.Process(id="SYS.1", name="Requirements Elicitation")],
            )
        ),
        timeout=TIMEOUT,
    ).rule_set
    live = RuleSets(env.stack.db(), CacheReader(CacheSettings(address=env.sidecar.address)))
    dead = RuleSets(
        env.stack.db(),
        CacheReader(CacheSettings(address=f"127.0.0.1:{free_port()}", timeout_seconds=0.5)),
    )
    for reader in (live, dead):
        found = reader.get(created.id)
        assert found is not None
        assert (found.id, found.version, [p.id for p in found.processes]) == (
            created.id,
            "1",
            ["SYS.1"],
        )
        assert reader.get(str(uuid.uuid4())) is None
        builtin = reader.get("aspice-3.1")
        assert builtin is not None
        assert builtin.built_in
    started = time.monotonic()
    assert dead.get(created.id) is not None
    # Refused at once (nothing listens), never more than the cache timeout.
    assert time.monotonic() - started < 0.5 + 0.5


_LONG_ROWS = 30_000_000


@pytest.fixture(scope="module")
def long_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Parquet export of 30 million rows (runs of repeated values: about 1 MB) whose
    read into DuckDB takes seconds; far beyond MAX_ITEMS, which only the rows after the
    read would find out."""
    n = 100_000
    chunk = pa.table(
        {
            "item_id": pa.array([f"R-{i // 1000}" for i in range(n)]).dictionary_encode(),
            "item_type": pa.array(["requirement"] * n).dictionary_encode(),
            "parent_id": pa.array([f"SR-{i // 10_000}" for i in range(n)]).dictionary_encode(),
            "linked_ids": pa.array([f"T-{i // 1000};T-7" for i in range(n)]).dictionary_encode(),
            "status": pa.array(["approved"] * n).dictionary_encode(),
        }
    )
    path = tmp_path_factory.mktemp("long") / "long.parquet"
    with pq.ParquetWriter(path, chunk.schema) as writer:
        for _ in range(_LONG_ROWS // n):
            writer.write_table(chunk)
    return path


def test_a_long_read_reports_progress_and_a_cancel_inside_it_ends_within_2s(
    env: Env, fixture: Fixture, long_export: Path
) -> None:
    export = upload(
        env.artifacts,
        fixture.project,
        long_export,
        name="long.parquet",
        fmt=apb.DATASET_FORMAT_PARQUET,
    )
    task = env.tasks.SubmitComplianceReport(
        pb.SubmitComplianceReportRequest(
            request_id=str(uuid.uuid4()),
            project_id=fixture.project,
            compliance_report=cpb.ComplianceReportSpec(
                traceability=apb.ArtifactRef(artifact_id=export.id)
            ),
        ),
        timeout=TIMEOUT,
    ).task
    # Two reports of DuckDB's own progress inside the read: the statement is running.
    running: list[pb.TaskEvent] = []
    reading = 0
    for item in env.tasks.WatchTask(pb.WatchTaskRequest(id=task.id), timeout=60):
        if not item.HasField("event"):
            continue
        assert item.event.state not in TERMINAL, (
            "the task ended before two progress reports inside the read",
            [e.progress.message for e in running],
            item.event.task.error,
        )
        if item.event.state == pb.TASK_STATE_RUNNING:
            running.append(item.event)
            reading += item.event.progress.message.startswith("reading the traceability export")
            if reading == 2:
                break
    asked = datetime.now(UTC)
    env.tasks.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=TIMEOUT)
    final = watch_to_end(env.tasks, task.id, timeout=60)[-1]
    assert final.task.state == pb.TASK_STATE_CANCELLED, final.task
    assert (final.time.ToDatetime(tzinfo=UTC) - asked).total_seconds() < 2.0
    assert_progress_cadence(running)

"""The compliance report's judgement and rendering, as pure functions.

Expectations are written out by hand from each fixture's construction, or, for the random
exports, computed by a brute-force reference (every pair of items looked at) that shares
no code with ``workers._compliance_checks``.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pypdf
import pytest
from agentic.compliance.v1 import rule_sets_pb2 as rpb
from agentic.tasks.v1 import compliance_report_pb2 as pb

from workers._compliance_checks import (
    MAX_ITEMS,
    MAX_LISTED_ITEMS,
    Traceability,
    TraceabilityOutcome,
    judge,
)
from workers._compliance_render import ReportHeader, render_html, write_pdf
from workers._context import PermanentError

C = rpb.Check
ALL_CHECKS = [
    C.CHECK_REQUIREMENT_HAS_PARENT,
    C.CHECK_REQUIREMENT_HAS_TEST,
    C.CHECK_TEST_HAS_RESULT,
    C.CHECK_TEST_RESULT_PASSED,
    C.CHECK_LINKS_RESOLVE,
    C.CHECK_DESIGN_HAS_REQUIREMENT,
]
Row = tuple[str, str, str, str, str]


def _trace(rows: Sequence[Row]) -> Traceability:
    trace = Traceability()
    for number, row in enumerate(rows, start=1):
        trace.add(number, *row)
    return trace


# A small export with one of every gap:
#   SR-1 (top level, no parent) <- R-1 <- R-2; R-3's parent is missing (X-9).
#   T-1 links R-1 (so R-1 has a test, undirected); R-2 links T-2 itself.
#   R-3 has no test. T-1 -> TR-1 passed; T-2 -> TR-2 failed; T-3 has no result and a
#   linked id Y-1 that is not there. D-1 links R-2; D-2 links nothing but itself.
EXPORT: list[Row] = [
    ("SR-1", "requirement", "", "", "approved"),
    ("R-1", "requirement", "SR-1", "", ""),
    ("R-2", "Requirement ", "R-1", "T-2", ""),
    ("R-3", "requirement", "X-9", "", ""),
    ("T-1", "test", "", "R-1", ""),
    ("T-2", "test", "", "", ""),
    ("T-3", "test", "", "Y-1;", ""),
    ("TR-1", "test-result", "T-1", "", "passed"),
    ("TR-2", "test-result", "", "T-2", "FAILED"),
    ("D-1", "design", "", "R-2", ""),
    ("D-2", "design", "", "D-2", ""),
]


def test_each_check_reports_exactly_its_items() -> None:
    outcome = _trace(EXPORT).outcome()
    found = {check: outcome.checks[check].item_ids for check in ALL_CHECKS}
    assert found == {
        C.CHECK_REQUIREMENT_HAS_PARENT: ("SR-1",),
        # SR-1 has no test either: only R-1 (via T-1) and R-2 (via T-2) have one.
        C.CHECK_REQUIREMENT_HAS_TEST: ("R-3", "SR-1"),
        C.CHECK_TEST_HAS_RESULT: ("T-3",),
        C.CHECK_TEST_RESULT_PASSED: ("TR-2",),
        C.CHECK_LINKS_RESOLVE: ("R-3", "T-3"),
        C.CHECK_DESIGN_HAS_REQUIREMENT: ("D-2",),
    }
    assert outcome.checks[C.CHECK_LINKS_RESOLVE].missing_ids == ("X-9", "Y-1")
    assert outcome.items == len(EXPORT)
    coverage = {c.level: (c.items, c.covered, c.ratio) for c in outcome.coverage}
    assert coverage == {
        # R-1 and R-2 have parents that resolve; SR-1 has none, R-3's dangles.
        "requirement->parent": (4, 2, 0.5),
        "requirement->test": (4, 2, 0.5),
        "test->result": (3, 2, pytest.approx(2 / 3)),
        "design->requirement": (2, 1, 0.5),
    }


def test_an_empty_export_covers_everything() -> None:
    outcome = Traceability().outcome()
    assert all(not c.item_ids for c in outcome.checks.values())
    assert [(c.items, c.covered, c.ratio) for c in outcome.coverage] == [(0, 0, 1.0)] * 4


@pytest.mark.parametrize(
    ("rows", "words", "row"),
    [
        ([("", "test", "", "", "")], "data row 1: item_id is empty", 1),
        (
            [("A", "test", "", "", ""), ("B", "epic", "", "", "")],
            "data row 2 (item 'B'): item_type 'epic'",
            2,
        ),
        ([("A", "test-result", "", "", "green")], "status 'green'", 1),
        ([("A", "test", "", "", ""), ("B", "test-result", "", "", "")], "status ''", 2),
        (
            [("A", "test", "", "", ""), ("B", "test", "", "", ""), ("A", "design", "", "", "")],
            "item_id 'A' appears twice (data rows 1 and 3)",
            3,
        ),
    ],
)
def test_bad_rows_name_the_row(rows: list[Row], words: str, row: int) -> None:
    with pytest.raises(PermanentError) as info:
        _trace(rows)
    assert info.value.reason == "TRACEABILITY_INVALID"
    assert words in info.value.message
    assert info.value.metadata["row"] == str(row)


def test_columns_must_all_be_there_once() -> None:
    Traceability.check_columns(
        ["status", "item_id", "extra", "item_type", "parent_id", "linked_ids"]
    )
    with pytest.raises(PermanentError) as info:
        Traceability.check_columns(["item_id", "item_type", "parent_id", "status"])
    assert info.value.reason == "TRACEABILITY_INVALID"
    assert "no column 'linked_ids'" in info.value.message
    assert info.value.metadata == {"column": "linked_ids"}
    with pytest.raises(PermanentError) as info:
        Traceability.check_columns(
            ["item_id", "item_id", "item_type", "parent_id", "linked_ids", "status"]
        )
    assert "'item_id' 2 times" in info.value.message


def test_too_many_items_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers._compliance_checks.MAX_ITEMS", 3)
    trace = _trace(
        [("A", "test", "", "", ""), ("B", "test", "", "", ""), ("C", "test", "", "", "")]
    )
    with pytest.raises(PermanentError) as info:
        trace.add(4, "D", "test", "", "", "")
    assert info.value.reason == "TRACEABILITY_TOO_LARGE"
    assert MAX_ITEMS > 100_000  # the documented bound: a 100k-item export fits


def _reference(rows: Sequence[Row]) -> dict[int, tuple[str, ...]]:
    """Brute force over every pair: does item a link item b (either way)?"""
    ids = {r[0] for r in rows}

    def targets(row: Row) -> set[str]:
        out = {row[2]} if row[2] else set()
        for part in row[3].replace(",", ";").split(";"):
            if part.strip():
                out.add(part.strip())
        return out

    def linked(a: Row, kind: str) -> bool:
        for b in rows:
            if b[1] != kind or b[0] == a[0]:
                continue
            if b[0] in targets(a) or a[0] in targets(b):
                return True
        return False

    return {
        C.CHECK_REQUIREMENT_HAS_PARENT: tuple(
            sorted(r[0] for r in rows if r[1] == "requirement" and not r[2])
        ),
        C.CHECK_REQUIREMENT_HAS_TEST: tuple(
            sorted(r[0] for r in rows if r[1] == "requirement" and not linked(r, "test"))
        ),
        C.CHECK_TEST_HAS_RESULT: tuple(
            sorted(r[0] for r in rows if r[1] == "test" and not linked(r, "test-result"))
        ),
        C.CHECK_TEST_RESULT_PASSED: tuple(
            sorted(r[0] for r in rows if r[1] == "test-result" and r[4] == "failed")
        ),
        C.CHECK_LINKS_RESOLVE: tuple(sorted(r[0] for r in rows if targets(r) - ids)),
        C.CHECK_DESIGN_HAS_REQUIREMENT: tuple(
            sorted(r[0] for r in rows if r[1] == "design" and not linked(r, "requirement"))
        ),
    }


@pytest.mark.parametrize("seed", range(5))
def test_random_exports_match_a_brute_force_reference(seed: int) -> None:
    rng = random.Random(seed)
    kinds = ["requirement", "design", "test", "test-result"]
    ids = [f"I-{n}" for n in range(150)]
    pool = [*ids, "GONE-1", "GONE-2"]  # some links dangle
    rows: list[Row] = []
    for ident in ids:
        kind = rng.choice(kinds)
        parent = rng.choice(pool) if rng.random() < 0.5 else ""
        links = rng.sample(pool, rng.randint(0, 3))
        status = (
            rng.choice(["passed", "failed", "blocked", "not-run"]) if kind == "test-result" else ""
        )
        rows.append((ident, kind, parent, rng.choice([";", ","]).join(links), status))
    outcome = _trace(rows).outcome()
    assert {c: outcome.checks[c].item_ids for c in ALL_CHECKS} == _reference(rows)


def _rule_set() -> rpb.RuleSet:
    return rpb.RuleSet(
        id="test-set",
        name="Test <set> & co",
        version="7",
        source="hand-made",
        processes=[
            rpb.Process(  # everything provided, asks for error-free checks only
                id="SWE.4",
                name="Unit Verification",
                work_products=[rpb.WorkProduct(id="08-50", name="Test specification")],
                checks=[C.CHECK_TEST_HAS_RESULT],
            ),
            rpb.Process(  # one of two provided, plus the failed result
                id="SWE.1",
                name="Software Requirements Analysis",
                work_products=[
                    rpb.WorkProduct(id="17-11", name="Software requirements specification"),
                    rpb.WorkProduct(id="13-22", name="Traceability record"),
                ],
                checks=[C.CHECK_REQUIREMENT_HAS_TEST, C.CHECK_TEST_RESULT_PASSED],
            ),
            rpb.Process(  # nothing provided
                id="MAN.3",
                name="Project Management",
                work_products=[rpb.WorkProduct(id="08-12", name="Project plan")],
            ),
            rpb.Process(  # all provided, but a dangling link is an error
                id="SUP.8",
                name="Configuration Management",
                work_products=[rpb.WorkProduct(id="06-02", name="Handling and storage guide")],
                checks=[C.CHECK_LINKS_RESOLVE],
            ),
        ],
    )


PROVIDED = {"08-50": ["spec.pdf"], "17-11": ["srs <v2>.pdf", "srs.pdf"], "06-02": ["cm.pdf"]}


def _findings(outcome: pb.ProcessOutcome) -> list[tuple[int, str, str, tuple[str, ...]]]:
    return [(f.severity, f.rule, f.work_product_id, tuple(f.item_ids)) for f in outcome.findings]


def test_judgement_per_process() -> None:
    result = judge(_rule_set(), PROVIDED, _trace(EXPORT).outcome())
    by_id = {p.process_id: p for p in result.processes}
    assert [p.process_id for p in result.processes] == ["SWE.4", "SWE.1", "MAN.3", "SUP.8"]

    swe4 = by_id["SWE.4"]
    # A warning does not cost the status.
    assert swe4.status == pb.PROCESS_STATUS_COMPLIANT
    assert _findings(swe4) == [(pb.SEVERITY_WARNING, "test.no_result", "", ("T-3",))]

    swe1 = by_id["SWE.1"]
    assert swe1.status == pb.PROCESS_STATUS_PARTIAL
    assert list(swe1.provided_work_products) == ["17-11"]
    assert list(swe1.missing_work_products) == ["13-22"]
    assert _findings(swe1) == [  # most severe first, then by rule
        (pb.SEVERITY_ERROR, "test_result.failed", "", ("TR-2",)),
        (pb.SEVERITY_ERROR, "work_product.missing", "13-22", ()),
        (pb.SEVERITY_WARNING, "requirement.no_test", "", ("R-3", "SR-1")),
    ]

    man3 = by_id["MAN.3"]
    assert man3.status == pb.PROCESS_STATUS_MISSING
    assert _findings(man3) == [(pb.SEVERITY_ERROR, "work_product.missing", "08-12", ())]

    sup8 = by_id["SUP.8"]
    assert sup8.status == pb.PROCESS_STATUS_PARTIAL
    assert _findings(sup8) == [(pb.SEVERITY_ERROR, "link.dangling", "", ("R-3", "T-3"))]
    assert "X-9, Y-1" in sup8.findings[0].message

    totals = result.totals
    assert (totals.processes, totals.compliant, totals.partial, totals.missing) == (4, 1, 2, 1)
    assert (totals.expected_work_products, totals.provided_work_products) == (5, 3)
    assert (totals.errors, totals.warnings, totals.traceability_items) == (4, 2, 11)
    assert [c.level for c in result.coverage] == [
        "requirement->parent",
        "requirement->test",
        "test->result",
        "design->requirement",
    ]


def test_without_an_export_only_work_products_count() -> None:
    result = judge(_rule_set(), PROVIDED, None)
    by_id = {p.process_id: p for p in result.processes}
    assert by_id["SWE.4"].status == pb.PROCESS_STATUS_COMPLIANT
    assert by_id["SUP.8"].status == pb.PROCESS_STATUS_COMPLIANT
    assert [f.rule for f in by_id["SWE.4"].findings] == ["traceability.not_checked"]
    assert by_id["SWE.4"].findings[0].severity == pb.SEVERITY_INFO
    assert [f.rule for f in by_id["MAN.3"].findings] == ["work_product.missing"]  # no checks
    assert not result.coverage
    assert result.totals.traceability_items == 0
    assert (result.totals.errors, result.totals.warnings) == (2, 0)


def test_a_long_list_is_cut_and_counted() -> None:
    rows: list[Row] = [(f"R-{n:04d}", "requirement", "", "", "") for n in range(250)]
    rule_set = rpb.RuleSet(
        id="r",
        name="r",
        version="1",
        processes=[rpb.Process(id="SYS.2", name="n", checks=[C.CHECK_REQUIREMENT_HAS_PARENT])],
    )
    (finding,) = judge(rule_set, {}, _trace(rows).outcome()).processes[0].findings
    assert list(finding.item_ids) == [f"R-{n:04d}" for n in range(MAX_LISTED_ITEMS)]
    assert finding.message.startswith("250 requirement(s) without a parent")


def test_progress_is_called_per_process() -> None:
    seen: list[tuple[int, str]] = []
    judge(_rule_set(), PROVIDED, None, on_process=lambda done, pid: seen.append((done, pid)))
    assert seen == [(1, "SWE.4"), (2, "SWE.1"), (3, "MAN.3"), (4, "SUP.8")]


def _report(outcome: TraceabilityOutcome | None = None) -> tuple[str, pb.ComplianceReportResult]:
    rule_set = _rule_set()
    result = judge(rule_set, PROVIDED, outcome)
    header = ReportHeader(
        project_id="p-1",
        task_id="t-1",
        created=datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
        traceability_name="<trace>.csv",
    )
    return render_html(header, rule_set, result, PROVIDED), result


def test_html_escapes_what_it_was_given() -> None:
    document, _ = _report(_trace(EXPORT).outcome())
    assert "Test &lt;set&gt; &amp; co" in document
    assert "srs &lt;v2&gt;.pdf" in document
    assert "&lt;trace&gt;.csv" in document
    assert "<set>" not in document
    assert "<v2>" not in document
    assert "2026-03-04 05:06:07 UTC" in document
    assert "http" not in document
    assert "<script" not in document


def test_pdf_opens_and_is_the_same_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document, _ = _report(_trace(EXPORT).outcome())
    created = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    write_pdf(document, tmp_path / "a.pdf", created=created)
    # An hour later, as a re-run would be (font subsets carry a time unless told which).
    now = time.time
    monkeypatch.setattr(time, "time", lambda: now() + 3600)
    write_pdf(document, tmp_path / "b.pdf", created=created)
    monkeypatch.undo()
    data = (tmp_path / "a.pdf").read_bytes()
    assert data == (tmp_path / "b.pdf").read_bytes()
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert len(reader.pages) > 0
    text = "".join(page.extract_text() for page in reader.pages)
    for process_id in ("SWE.4", "SWE.1", "MAN.3", "SUP.8"):
        assert process_id in text

"""The compliance report's judgement: pure functions, no IO (the kind's function feeds them).

Two inputs are judged against a rule set (``agentic.compliance.v1.RuleSet``):

**Work products.** ``provided`` maps each ASPICE work-product id (``17-11``) to the
names of the project's READY DOCUMENT artifacts tagged with it. Per process, an expected
work product is *provided* when at least one document carries its id, otherwise
*missing*: one ``work_product.missing`` finding (ERROR) each.

**Traceability** (optional), an export of items read row by row into ``Traceability``:
``item_id``, ``item_type`` (``requirement``, ``design``, ``test``, ``test-result``),
``parent_id``, ``linked_ids`` (ids separated by ``;`` or ``,``) and ``status``. Links are
*undirected*: an item's ``parent_id`` and each of its ``linked_ids`` link it to that
item, and the link counts for both ends (a test listing a requirement in ``linked_ids``
covers that requirement exactly as a requirement listing the test would). A link whose
target is not an item of the export is *dangling* and links nothing; a link of an item to
itself is ignored. The checks (``rule_sets_pb2.Check``) and the rule of each finding:

============================  ==========================  ========  ===========================
check                         finding rule                severity  an item is reported when
============================  ==========================  ========  ===========================
REQUIREMENT_HAS_PARENT        ``requirement.no_parent``   WARNING   a requirement's parent_id
                                                                    is empty (top-level
                                                                    stakeholder requirements
                                                                    show up here by design)
REQUIREMENT_HAS_TEST          ``requirement.no_test``     WARNING   no test is linked to it
TEST_HAS_RESULT               ``test.no_result``          WARNING   no test-result is linked
TEST_RESULT_PASSED            ``test_result.failed``      ERROR     a test-result's status is
                                                                    ``failed``
LINKS_RESOLVE                 ``link.dangling``           ERROR     its parent_id or a linked
                                                                    id names no item
DESIGN_HAS_REQUIREMENT        ``design.no_requirement``   WARNING   no requirement is linked
============================  ==========================  ========  ===========================

Each check's outcome is computed once and attributed to every process whose ``checks``
name it: one finding per (process, rule) listing the items (sorted, at most
``MAX_LISTED_ITEMS``; the message gives the full count). Without an export the processes
are judged on their work products alone, and a process that asks for checks gets one INFO
finding ``traceability.not_checked`` saying so.

Coverage per level, over the whole export: ``requirement->parent`` (requirements whose
parent_id names an item), ``requirement->test``, ``test->result`` and
``design->requirement`` (items of the first type linked to one of the second).

A process is MISSING when it expects work products and none is provided; otherwise
COMPLIANT when none is missing and no finding of it is an ERROR; otherwise PARTIAL.
WARNING and INFO findings never change a status.

Bad data raises PermanentError ``TRACEABILITY_INVALID`` naming the column, the row or the
item (in the message, and as ErrorInfo metadata ``column``, ``row``, ``item_id``): a
missing column, an empty item_id, an unknown item_type, a test-result status other than
passed, failed, blocked or not-run, an item_id that appears twice. The index keeps
every item in memory: measured 0.45 KB an item with a parent and two links of ten-odd
characters each (100,000 items: 45 MiB); beyond ``MAX_ITEMS`` the task fails with
``TRACEABILITY_TOO_LARGE`` rather than grow without bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agentic.compliance.v1 import rule_sets_pb2
from agentic.tasks.v1 import compliance_report_pb2 as pb

from workers._context import PermanentError

__all__ = [
    "COLUMNS",
    "MAX_ITEMS",
    "MAX_LISTED_ITEMS",
    "CheckOutcome",
    "Traceability",
    "TraceabilityOutcome",
    "judge",
]

COLUMNS = ("item_id", "item_type", "parent_id", "linked_ids", "status")
"""The columns a traceability export must have (more are ignored)."""
ITEM_TYPES = ("requirement", "design", "test", "test-result")
RESULT_STATUSES = ("passed", "failed", "blocked", "not-run")
MAX_ITEMS = 250_000
"""Items a traceability export may have (the index is in memory: about 110 MiB at this)."""
MAX_LISTED_ITEMS = 100
"""Item ids one finding lists; its message gives the full count."""

_REQUIREMENT, _DESIGN, _TEST, _RESULT = range(4)
_SEPARATORS = re.compile(r"[;,]")
_INVALID = "TRACEABILITY_INVALID"

Check = rule_sets_pb2.Check


@dataclass(frozen=True, slots=True)
class _Rule:
    rule: str
    severity: pb.Severity.ValueType
    noun: str
    """What the message says of the items: '<n> <noun>'."""


_RULES: Mapping[rule_sets_pb2.Check.ValueType, _Rule] = {
    Check.CHECK_REQUIREMENT_HAS_PARENT: _Rule(
        "requirement.no_parent", pb.SEVERITY_WARNING, "requirement(s) without a parent"
    ),
    Check.CHECK_REQUIREMENT_HAS_TEST: _Rule(
        "requirement.no_test", pb.SEVERITY_WARNING, "requirement(s) without a linked test"
    ),
    Check.CHECK_TEST_HAS_RESULT: _Rule(
        "test.no_result", pb.SEVERITY_WARNING, "test(s) without a linked test result"
    ),
    Check.CHECK_TEST_RESULT_PASSED: _Rule(
        "test_result.failed", pb.SEVERITY_ERROR, "test result(s) with status failed"
    ),
    Check.CHECK_LINKS_RESOLVE: _Rule(
        "link.dangling", pb.SEVERITY_ERROR, "item(s) linking to ids that are not in the export"
    ),
    Check.CHECK_DESIGN_HAS_REQUIREMENT: _Rule(
        "design.no_requirement", pb.SEVERITY_WARNING, "design item(s) without a linked requirement"
    ),
}


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """The items one check reports, sorted; for dangling links also the missing ids."""

    item_ids: tuple[str, ...]
    missing_ids: tuple[str, ...] = ()
    """LINKS_RESOLVE only: the ids the reported items link to that name no item, sorted."""


@dataclass(frozen=True, slots=True)
class TraceabilityOutcome:
    """What the export shows: each check's items and the coverage per level."""

    items: int
    checks: Mapping[rule_sets_pb2.Check.ValueType, CheckOutcome]
    coverage: tuple[pb.Coverage, ...]


@dataclass(slots=True)
class Traceability:
    """The items of one export, added row by row (``add``), then judged (``outcome``)."""

    _index: dict[str, int] = field(default_factory=dict)
    _ids: list[str] = field(default_factory=list)
    _types: bytearray = field(default_factory=bytearray)
    _parents: list[str] = field(default_factory=list)
    _links: list[tuple[str, ...]] = field(default_factory=list)
    _failed: list[int] = field(default_factory=list)
    _rows: list[int] = field(default_factory=list)

    @staticmethod
    def check_columns(columns: Sequence[str]) -> None:
        """Raise TRACEABILITY_INVALID unless every column of ``COLUMNS`` is there, once."""
        for name in COLUMNS:
            count = list(columns).count(name)
            if count == 0:
                raise PermanentError(
                    f"the traceability export has no column {name!r} (it needs "
                    f"{', '.join(COLUMNS)}; it has {', '.join(columns) or 'none'})",
                    reason=_INVALID,
                    metadata={"column": name},
                )
            if count > 1:
                raise PermanentError(
                    f"the traceability export has the column {name!r} {count} times",
                    reason=_INVALID,
                    metadata={"column": name},
                )

    def __len__(self) -> int:
        return len(self._ids)

    def add(
        self,
        row: int,
        item_id: str | None,
        item_type: str | None,
        parent_id: str | None,
        linked_ids: str | None,
        status: str | None,
    ) -> None:
        """Add data row ``row`` (1-based, the header not counted); raise on bad data."""
        ident = (item_id or "").strip()
        if not ident:
            raise PermanentError(
                f"traceability export, data row {row}: item_id is empty",
                reason=_INVALID,
                metadata={"row": str(row), "column": "item_id"},
            )
        kind = (item_type or "").strip().lower()
        if kind not in ITEM_TYPES:
            raise PermanentError(
                f"traceability export, data row {row} (item {ident!r}): item_type "
                f"{(item_type or '')!r} is not one of {', '.join(ITEM_TYPES)}",
                reason=_INVALID,
                metadata={"row": str(row), "column": "item_type", "item_id": ident},
            )
        code = ITEM_TYPES.index(kind)
        if code == _RESULT:
            state = (status or "").strip().lower()
            if state not in RESULT_STATUSES:
                raise PermanentError(
                    f"traceability export, data row {row} (test result {ident!r}): status "
                    f"{(status or '')!r} is not one of {', '.join(RESULT_STATUSES)}",
                    reason=_INVALID,
                    metadata={"row": str(row), "column": "status", "item_id": ident},
                )
            if state == "failed":
                self._failed.append(len(self._ids))
        earlier = self._index.get(ident)
        if earlier is not None:
            raise PermanentError(
                f"traceability export: item_id {ident!r} appears twice (data rows "
                f"{self._rows[earlier]} and {row})",
                reason=_INVALID,
                metadata={"row": str(row), "column": "item_id", "item_id": ident},
            )
        if len(self._ids) >= MAX_ITEMS:
            raise PermanentError(
                f"the traceability export has more than {MAX_ITEMS:,} items; split it "
                "(for instance per subsystem) and report on each part",
                reason="TRACEABILITY_TOO_LARGE",
            )
        self._index[ident] = len(self._ids)
        self._ids.append(ident)
        self._types.append(code)
        self._parents.append((parent_id or "").strip())
        self._links.append(
            tuple(
                dict.fromkeys(
                    part
                    for part in (p.strip() for p in _SEPARATORS.split(linked_ids or ""))
                    if part
                )
            )
        )
        self._rows.append(row)

    def outcome(self) -> TraceabilityOutcome:
        """Every check's items and the coverage per level (see the module docstring)."""
        index, types = self._index, self._types
        # Bit t of linked[i]: item i is linked (either way) to an item of type t.
        linked = [0] * len(self._ids)
        dangling: dict[int, set[str]] = {}
        no_parent: list[int] = []
        parent_resolves = [False] * len(self._ids)
        for i, (parent, links) in enumerate(zip(self._parents, self._links, strict=True)):
            if not parent:
                no_parent.append(i)
            for target in (parent, *links) if parent else links:
                j = index.get(target)
                if j is None:
                    dangling.setdefault(i, set()).add(target)
                    continue
                if j == i:
                    continue
                if target == parent:
                    parent_resolves[i] = True
                linked[i] |= 1 << types[j]
                linked[j] |= 1 << types[i]

        def where(kind: int, missing_link: int) -> list[int]:
            return [
                i for i, t in enumerate(types) if t == kind and not linked[i] >> missing_link & 1
            ]

        requirements = [i for i, t in enumerate(types) if t == _REQUIREMENT]
        no_test = where(_REQUIREMENT, _TEST)
        no_result = where(_TEST, _RESULT)
        no_requirement = where(_DESIGN, _REQUIREMENT)
        checks = {
            Check.CHECK_REQUIREMENT_HAS_PARENT: self._outcome(
                i for i in no_parent if types[i] == _REQUIREMENT
            ),
            Check.CHECK_REQUIREMENT_HAS_TEST: self._outcome(no_test),
            Check.CHECK_TEST_HAS_RESULT: self._outcome(no_result),
            Check.CHECK_TEST_RESULT_PASSED: self._outcome(self._failed),
            Check.CHECK_LINKS_RESOLVE: CheckOutcome(
                item_ids=tuple(sorted(self._ids[i] for i in dangling)),
                missing_ids=tuple(sorted(set().union(*dangling.values()))),
            ),
            Check.CHECK_DESIGN_HAS_REQUIREMENT: self._outcome(no_requirement),
        }
        tests = sum(1 for t in types if t == _TEST)
        designs = sum(1 for t in types if t == _DESIGN)
        coverage = (
            _coverage(
                "requirement->parent",
                len(requirements),
                sum(1 for i in requirements if parent_resolves[i]),
            ),
            _coverage("requirement->test", len(requirements), len(requirements) - len(no_test)),
            _coverage("test->result", tests, tests - len(no_result)),
            _coverage("design->requirement", designs, designs - len(no_requirement)),
        )
        return TraceabilityOutcome(items=len(self._ids), checks=checks, coverage=coverage)

    def _outcome(self, indices: Iterable[int]) -> CheckOutcome:
        return CheckOutcome(item_ids=tuple(sorted(self._ids[i] for i in indices)))


def _coverage(level: str, items: int, covered: int) -> pb.Coverage:
    return pb.Coverage(
        level=level, items=items, covered=covered, ratio=covered / items if items else 1.0
    )


def judge(
    rule_set: rule_sets_pb2.RuleSet,
    provided: Mapping[str, Sequence[str]],
    traceability: TraceabilityOutcome | None,
    *,
    on_process: Callable[[int, str], None] | None = None,
) -> pb.ComplianceReportResult:
    """The report's typed result (without its artifact ids) for ``rule_set``.

    ``provided``: work-product id -> names of the documents that provide it;
    ``traceability``: the export's outcome, or None without an export; ``on_process``
    is called with (processes done, process id) after each process.
    """
    result = pb.ComplianceReportResult(rule_set_id=rule_set.id, rule_set_version=rule_set.version)
    totals = result.totals
    for process in rule_set.processes:
        outcome = result.processes.add(process_id=process.id, name=process.name)
        findings: list[pb.Finding] = []
        for product in process.work_products:
            if provided.get(product.id):
                outcome.provided_work_products.append(product.id)
                continue
            outcome.missing_work_products.append(product.id)
            findings.append(
                pb.Finding(
                    severity=pb.SEVERITY_ERROR,
                    rule="work_product.missing",
                    process_id=process.id,
                    work_product_id=product.id,
                    message=f"no document of the project provides {product.id} {product.name}",
                )
            )
        checks = [c for c in process.checks if c in _RULES]
        if traceability is None and checks:
            names = ", ".join(Check.Name(c).removeprefix("CHECK_") for c in checks)
            findings.append(
                pb.Finding(
                    severity=pb.SEVERITY_INFO,
                    rule="traceability.not_checked",
                    process_id=process.id,
                    message=f"no traceability export was given, so {names} did not run",
                )
            )
        if traceability is not None:
            for check in checks:
                found = traceability.checks[check]
                if found.item_ids:
                    findings.append(_finding(process.id, _RULES[check], found))
        findings.sort(key=lambda f: (-f.severity, f.rule, f.work_product_id, list(f.item_ids)))
        outcome.findings.extend(findings)
        errors = sum(1 for f in findings if f.severity == pb.SEVERITY_ERROR)
        expected = len(process.work_products)
        if expected and not outcome.provided_work_products:
            outcome.status = pb.PROCESS_STATUS_MISSING
            totals.missing += 1
        elif outcome.missing_work_products or errors:
            outcome.status = pb.PROCESS_STATUS_PARTIAL
            totals.partial += 1
        else:
            outcome.status = pb.PROCESS_STATUS_COMPLIANT
            totals.compliant += 1
        totals.processes += 1
        totals.expected_work_products += expected
        totals.provided_work_products += len(outcome.provided_work_products)
        totals.errors += errors
        totals.warnings += sum(1 for f in findings if f.severity == pb.SEVERITY_WARNING)
        if on_process is not None:
            on_process(totals.processes, process.id)
    if traceability is not None:
        result.coverage.extend(traceability.coverage)
        totals.traceability_items = traceability.items
    return result


def _finding(process_id: str, rule: _Rule, found: CheckOutcome) -> pb.Finding:
    count = len(found.item_ids)
    listed = found.item_ids[:MAX_LISTED_ITEMS]
    more = f" (the first {len(listed)} listed)" if count > len(listed) else ""
    message = f"{count} {rule.noun}{more}"
    if found.missing_ids:
        shown = ", ".join(found.missing_ids[:10])
        rest = len(found.missing_ids) - 10
        message += f"; missing ids: {shown}" + (f" and {rest} more" if rest > 0 else "")
    return pb.Finding(
        severity=rule.severity,
        rule=rule.rule,
        process_id=process_id,
        item_ids=listed,
        message=message,
    )

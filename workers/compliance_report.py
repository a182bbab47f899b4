"""PLACEHOLDER: replaced by the kind's implementation in the next commits (issue #12)."""

from __future__ import annotations

from agentic.tasks.v1 import compliance_report_pb2

from workers._context import PermanentError, TaskContext


def run_compliance_report(
    spec: compliance_report_pb2.ComplianceReportSpec, context: TaskContext
) -> compliance_report_pb2.ComplianceReportResult:
    """Not built yet."""
    raise PermanentError("not built yet", reason="UNIMPLEMENTED")

"""PLACEHOLDER: replaced by the kind's implementation in the next commits (issue #12)."""

from __future__ import annotations

from agentic.tasks.v1 import analytics_pb2

from workers._context import PermanentError, TaskContext


def run_analytics(
    spec: analytics_pb2.AnalyticsSpec, context: TaskContext
) -> analytics_pb2.AnalyticsResult:
    """Not built yet."""
    raise PermanentError("not built yet", reason="UNIMPLEMENTED")

"""PLACEHOLDER: replaced by the kind's implementation in the next commits (issue #12)."""

from __future__ import annotations

from agentic.tasks.v1 import profile_dataset_pb2

from workers._context import PermanentError, TaskContext


def run_profile_dataset(
    spec: profile_dataset_pb2.ProfileDatasetSpec, context: TaskContext
) -> profile_dataset_pb2.ProfileDatasetResult:
    """Not built yet."""
    raise PermanentError("not built yet", reason="UNIMPLEMENTED")

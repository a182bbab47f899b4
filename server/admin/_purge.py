"""PurgeTasks: the request's checks; the batched deletion is ``core.tasks.purge_tasks``
(shared with the retention kind).

A purged task's ``request_id`` is free again: a Submit replaying it after the purge
creates a new task. The age to purge at is therefore also the idempotency window.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentic.tasks.v1 import tasks_pb2

from core.rpc import FieldViolation, InvalidArgument
from core.tasks import DEFAULT_PURGE_BATCH_SIZE, TERMINAL_STATES, PurgeResult, purge_tasks

__all__ = ["DEFAULT_BATCH_SIZE", "PurgeResult", "check_request", "purge_tasks"]

DEFAULT_BATCH_SIZE = DEFAULT_PURGE_BATCH_SIZE
_DOMAIN = "agentic.admin.v1"


def _state_name(state: int) -> str:
    try:
        return tasks_pb2.TaskState.Name(state)  # type: ignore[arg-type]
    except ValueError:
        return str(state)


def check_request(older_than_seconds: float | None, states: Iterable[int]) -> frozenset[int]:
    """The states to purge; INVALID_ARGUMENT (with field violations) for no age or a
    non-terminal state."""
    violations = []
    if older_than_seconds is None or older_than_seconds < 1:
        violations.append(
            FieldViolation(
                "older_than",
                "is required: purge only tasks older than a stated age (at least 1s)",
                reason="older_than.required",
            )
        )
    picked = frozenset(states) or TERMINAL_STATES
    for index, state in enumerate(states):
        if state not in TERMINAL_STATES:
            violations.append(
                FieldViolation(
                    f"states[{index}]",
                    f"{_state_name(state)} is not terminal; only TASK_STATE_SUCCEEDED, "
                    "TASK_STATE_FAILED and TASK_STATE_CANCELLED may be purged",
                    reason="states.not_terminal",
                )
            )
    if violations:
        raise InvalidArgument(violations, reason="INVALID_PURGE", domain=_DOMAIN)
    return picked

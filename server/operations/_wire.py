"""Tasks as google.longrunning Operations (AIP-151): names, and the Operation of a Task.

An operation is a task seen through the generic LRO contract, so clients that know only
google.longrunning (google-api-core's operation helpers, Go's ``longrunning`` package)
can wait on any kind:

- ``name`` is ``operations/<task id>``;
- ``metadata`` is an Any of the whole ``agentic.tasks.v1.Task`` (state, progress,
  attempt, spec...), so a poller can show progress without knowing the task API;
- ``done`` is true once the task is SUCCEEDED, FAILED or CANCELLED;
- then exactly one of ``response``, an Any of the kind's typed result (the
  ``Task.<kind>_result`` message: ``agentic.tasks.v1.ProbeResult`` for a probe), or
  ``error``, the google.rpc.Status the task recorded (code, message and its ErrorInfo
  detail with the reason).
"""

from __future__ import annotations

from agentic.tasks.v1 import tasks_pb2
from google.longrunning import operations_proto_pb2  # type: ignore[import-untyped]  # googleapis-common-protos ships .pyi stubs but no py.typed marker
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from core.rpc import FieldViolation, InvalidArgument, validate_request
from core.tasks import DOMAIN, TERMINAL_STATES, kind_fields

__all__ = ["COLLECTION", "operation_name", "operation_of", "task_id_of"]

COLLECTION = "operations"
"""The collection every operation name starts with (``ListOperationsRequest.name``)."""

_PREFIX = f"{COLLECTION}/"

# What a terminal task without a recorded error reports (none is written that way today:
# every FAILED and CANCELLED path stores a Status; this keeps ``done`` with exactly one of
# response/error even for rows written by an older version).
_UNRECORDED = {
    tasks_pb2.TASK_STATE_FAILED: (code_pb2.UNKNOWN, "the task failed without a recorded error"),
    tasks_pb2.TASK_STATE_CANCELLED: (code_pb2.CANCELLED, "the task was cancelled"),
}


def operation_name(task_id: str) -> str:
    """The operation name of task ``task_id``."""
    return _PREFIX + task_id


def _bad_name(description: str) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("name", description, reason="name.operation")],
        reason="INVALID_OPERATION_NAME",
        domain=DOMAIN,
    )


def task_id_of(name: str) -> str:
    """The task id in operation name ``name``; INVALID_ARGUMENT on ``name`` otherwise.

    The id must pass the same rule as ``GetTaskRequest.id`` (a UUID): the rule is taken
    from that proto, not restated here.
    """
    if not name.startswith(_PREFIX):
        raise _bad_name(f"must be {_PREFIX}<task id>")
    task_id = name.removeprefix(_PREFIX)
    try:
        validate_request(tasks_pb2.GetTaskRequest(id=task_id), domain=DOMAIN)
    except InvalidArgument as exc:
        detail = "; ".join(v.description for v in exc.violations)
        raise _bad_name(f"must be {_PREFIX}<task id>, the task id a UUID ({detail})") from None
    return task_id


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def operation_of(task: tasks_pb2.Task) -> operations_proto_pb2.Operation:
    """The Operation that shows ``task`` (see the module docstring)."""
    operation = operations_proto_pb2.Operation(
        name=operation_name(task.id),
        metadata=_packed(task),
        done=task.state in TERMINAL_STATES,
    )
    if not operation.done:
        return operation
    if task.state == tasks_pb2.TASK_STATE_SUCCEEDED:
        # Always set for a SUCCEEDED task (to_proto sets it even when it has no bytes).
        operation.response.CopyFrom(_packed(getattr(task, kind_fields(task.kind).result_field)))
    elif task.HasField("error"):
        operation.error.CopyFrom(task.error)
    else:
        code, message = _UNRECORDED[task.state]
        operation.error.CopyFrom(status_pb2.Status(code=code, message=message))
    return operation

"""The wire form of tasks, and the naming convention that ties a kind to its proto fields.

A kind ``TASK_KIND_<NAME>`` has its spec in ``Task.<name>`` (oneof ``spec``) and its
result in ``Task.<name>_result`` (oneof ``outcome``), and runs as the Celery task
``agentic.task.<name>``. The server needs nothing else about a kind, so adding one never
touches this package (see the how-to in ``workers``); ``kind_fields`` fails loudly when a
new kind's proto fields do not follow the convention.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from agentic.tasks.v1 import tasks_pb2
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor
from google.rpc import code_pb2, error_details_pb2, status_pb2

from core.db import utc
from core.tasks._record import TaskRecord

DOMAIN = "agentic.tasks.v1"

TERMINAL_STATES = frozenset(
    {
        tasks_pb2.TASK_STATE_SUCCEEDED,
        tasks_pb2.TASK_STATE_FAILED,
        tasks_pb2.TASK_STATE_CANCELLED,
    }
)


@dataclass(frozen=True, slots=True)
class KindFields:
    """Where a kind lives on the wire."""

    name: str
    """Short name: ``probe`` for TASK_KIND_PROBE."""
    spec_field: str
    """The field of oneof ``Task.spec`` holding the kind's spec."""
    result_field: str
    """The field of oneof ``Task.outcome`` holding the kind's result."""
    spec_type: Descriptor
    result_type: Descriptor


def submit_method_name(kind_name: str) -> str:
    """``Submit`` + the kind's short name in CamelCase: profile_dataset -> SubmitProfileDataset."""
    return "Submit" + "".join(part.capitalize() for part in kind_name.split("_"))


def kind_fields(kind: int) -> KindFields:
    """The wire fields of ``kind``; ValueError when the protos do not follow the convention."""
    enum_name = tasks_pb2.TaskKind.Name(kind)  # type: ignore[arg-type]  # ValueError if unknown
    if kind == tasks_pb2.TASK_KIND_UNSPECIFIED:
        raise ValueError("TASK_KIND_UNSPECIFIED is not a kind")
    name = enum_name.removeprefix("TASK_KIND_").lower()
    task = tasks_pb2.Task.DESCRIPTOR
    spec = task.fields_by_name.get(name)
    result = task.fields_by_name.get(f"{name}_result")
    if (
        spec is None
        or result is None
        or spec.containing_oneof is None
        or spec.containing_oneof.name != "spec"
        or result.containing_oneof is None
        or result.containing_oneof.name != "outcome"
    ):
        raise ValueError(
            f"{enum_name} needs Task.{name} in oneof spec and Task.{name}_result in oneof outcome"
        )
    assert spec.message_type is not None
    assert result.message_type is not None
    return KindFields(
        name=name,
        spec_field=name,
        result_field=f"{name}_result",
        spec_type=spec.message_type,
        result_type=result.message_type,
    )


def celery_task_name(kind: int) -> str:
    """The Celery task that runs ``kind``: ``agentic.task.<name>``."""
    return f"agentic.task.{kind_fields(kind).name}"


def error_status(
    code: int, message: str, *, reason: str, metadata: Mapping[str, str] | None = None
) -> bytes:
    """A serialized google.rpc.Status with ErrorInfo(reason, agentic.tasks.v1, metadata)."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {}))
    status = status_pb2.Status(code=code, message=message, details=[info])
    data: bytes = status.SerializeToString()
    return data


CANCELLED_STATUS = error_status(code_pb2.CANCELLED, "cancelled by request", reason="TASK_CANCELLED")


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(utc(value))
    return stamp


def to_proto(record: TaskRecord) -> tasks_pb2.Task:
    """The wire form of a stored task."""
    task = tasks_pb2.Task(
        id=record.id,
        kind=record.kind,
        state=record.state,
        progress=tasks_pb2.Progress(
            fraction=record.progress_fraction, message=record.progress_message
        ),
        attempt=record.attempt,
        priority=record.priority,
        owner_id=record.owner_id,
        project_id=record.project_id or "",
        request_id=record.request_id,
        create_time=_timestamp(record.create_time),
        start_time=_timestamp(record.start_time),
        end_time=_timestamp(record.end_time),
        last_sequence=record.last_sequence,
    )
    fields = kind_fields(record.kind)
    spec = getattr(task, fields.spec_field)
    spec.SetInParent()  # set the oneof even when the spec serializes to no bytes
    spec.MergeFromString(record.spec)
    if record.result is not None:
        result = getattr(task, fields.result_field)
        result.SetInParent()
        result.MergeFromString(record.result)
    elif record.error is not None:
        task.error.MergeFromString(record.error)
    return task


def event_of(record: TaskRecord, time: datetime) -> tasks_pb2.TaskEvent:
    """The event that records ``record`` as the task's newest state."""
    task = to_proto(record)
    return tasks_pb2.TaskEvent(
        task_id=record.id,
        sequence=record.last_sequence,
        time=_timestamp(time),
        state=task.state,
        progress=task.progress,
        attempt=record.attempt,
        terminal=record.state in TERMINAL_STATES,
        task=task,
    )

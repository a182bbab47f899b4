"""ListOperations' ``filter``: a small subset of AIP-160 over the ListTasks filters.

Grammar: empty, or terms joined by ``AND`` (upper case, as AIP-160 writes it), each
``field = value``:

- ``state = RUNNING`` (a TaskState, with or without its ``TASK_STATE_`` prefix, any case);
- ``kind = PROBE`` (a TaskKind, with or without ``TASK_KIND_``, any case);
- ``owner_id = "alice"`` (quotes optional for a value without spaces).

Each field at most once. Anything else (OR, NOT, other fields or operators) is
INVALID_ARGUMENT on ``filter``: the task store filters on exactly these three, and a
filter silently half-applied would list operations the caller did not ask for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from agentic.tasks.v1 import tasks_pb2

from core.rpc import FieldViolation, InvalidArgument
from core.tasks import DOMAIN

__all__ = ["MAX_FILTER_CHARS", "TaskFilter", "bad_filter", "parse_filter"]

MAX_FILTER_CHARS = 1024
"""Longer filters are refused before parsing (three terms fit in far less)."""

_TERM = re.compile(r'\s*([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|([^\s"=]+))\s*')
_AND = re.compile(r"\s+AND\s+")
_FIELDS = ("state", "kind", "owner_id")


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """The ListTasksRequest filters a ListOperations filter names (0 / "" = any)."""

    state: tasks_pb2.TaskState.ValueType = tasks_pb2.TASK_STATE_UNSPECIFIED
    kind: tasks_pb2.TaskKind.ValueType = tasks_pb2.TASK_KIND_UNSPECIFIED
    owner_id: str = ""


def bad_filter(description: str) -> InvalidArgument:
    """INVALID_ARGUMENT with a violation on ``filter``."""
    return InvalidArgument(
        [FieldViolation("filter", description, reason="filter.syntax")],
        reason="INVALID_FILTER",
        domain=DOMAIN,
    )


def _enum_name(field: str, text: str, prefix: str, names: list[str]) -> str:
    name = text.upper()
    if not name.startswith(prefix):
        name = prefix + name
    if name == prefix + "UNSPECIFIED" or name not in names:
        choices = ", ".join(n.removeprefix(prefix) for n in names if not n.endswith("UNSPECIFIED"))
        raise bad_filter(f"{field} must be one of {choices}")
    return name


def parse_filter(text: str) -> TaskFilter:
    """The filters ``text`` names (see the module docstring); INVALID_ARGUMENT otherwise."""
    if len(text) > MAX_FILTER_CHARS:
        raise bad_filter(f"at most {MAX_FILTER_CHARS} characters")
    if not text.strip():
        return TaskFilter()
    found: dict[str, str] = {}
    for term in _AND.split(text.strip()):
        match = _TERM.fullmatch(term)
        if match is None:
            raise bad_filter(
                "supported: terms `field = value` joined by AND, the fields " + ", ".join(_FIELDS)
            )
        field, quoted, bare = match.groups()
        if field not in _FIELDS:
            # Not echoed: it is client text (and the supported list says enough).
            raise bad_filter(f"unknown field; supported: {', '.join(_FIELDS)}")
        if field in found:
            raise bad_filter(f"{field} given more than once")
        found[field] = quoted if quoted is not None else bare
    result = TaskFilter(owner_id=found.get("owner_id", ""))
    if "state" in found:
        state = _enum_name("state", found["state"], "TASK_STATE_", tasks_pb2.TaskState.keys())
        result = replace(result, state=tasks_pb2.TaskState.Value(state))
    if "kind" in found:
        kind = _enum_name("kind", found["kind"], "TASK_KIND_", tasks_pb2.TaskKind.keys())
        result = replace(result, kind=tasks_pb2.TaskKind.Value(kind))
    return result

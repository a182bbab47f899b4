"""What a request's ``RuleSet`` contributes to a row: the columns of Create and Update.

The message's output-only fields (id, version, built_in, times, etag, owner_id) are never
read from a client; the row <-> message mapping itself is ``core.compliance``'s, shared
with the compliance worker.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentic.compliance.v1 import rule_sets_pb2

from core.compliance import encode_processes

UPDATABLE_FIELDS = frozenset({"name", "description", "processes", "source"})
"""The paths UpdateRuleSetRequest.update_mask may name (the proto's ``field_mask.in``)."""


def columns(rule_set: rule_sets_pb2.RuleSet, fields: Iterable[str]) -> dict[str, object]:
    """The ``rule_sets`` column values of ``fields`` (a subset of UPDATABLE_FIELDS)."""
    values: dict[str, object] = {}
    for field in fields:
        if field not in UPDATABLE_FIELDS:  # the proto rules refuse these; guards direct callers
            raise ValueError(f"not updatable: {field!r}")
        if field == "processes":
            values["processes"] = encode_processes(rule_set.processes)
        else:
            values[field] = getattr(rule_set, field)
    return values

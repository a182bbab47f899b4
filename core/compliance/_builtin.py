"""The built-in rule sets: data files shipped in this package, read and checked once.

Each ``<id>.toml`` beside this module is one read-only rule set (today only
``aspice-3.1.toml``, a transcription of the Automotive SPICE 3.1 PAM's output work
products per process; its header names the source and the checks mapping). A file that
breaks the ``agentic.compliance.v1.RuleSet`` rules (protovalidate, from the proto) stops
the first caller with a message naming the file, so a bad edit fails every test at once
instead of producing wrong reports.
"""

from __future__ import annotations

import functools
import hashlib
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from types import MappingProxyType
from typing import Any

from agentic.compliance.v1 import rule_sets_pb2
from google.protobuf import json_format

ASPICE_3_1 = "aspice-3.1"
"""Id of the built-in Automotive SPICE 3.1 rule set, the compliance report's default."""

BUILTIN_IDS: frozenset[str] = frozenset({ASPICE_3_1})
"""Ids of the built-in, read-only rule sets (each one has a data file ``<id>.toml``)."""

# Built-in sets never change at run time; their times are the transcription's date, so
# every process reports the same values (a deterministic report must not carry the
# start time of the process that happened to load the file).
_BUILTIN_TIME = datetime(2017, 11, 1, tzinfo=UTC)


class BuiltinRuleSetError(ValueError):
    """A built-in rule set's data file is malformed or breaks the proto's rules."""


def _parse(rule_set_id: str, text: str) -> rule_sets_pb2.RuleSet:
    where = f"core/compliance/{rule_set_id}.toml"
    try:
        data: dict[str, Any] = tomllib.loads(text)
        rule_set = json_format.ParseDict(data, rule_sets_pb2.RuleSet())
    except (tomllib.TOMLDecodeError, json_format.ParseError) as exc:
        raise BuiltinRuleSetError(f"{where}: {exc}") from None
    if rule_set.id != rule_set_id:
        raise BuiltinRuleSetError(f"{where}: id is {rule_set.id!r}, expected {rule_set_id!r}")
    problems = violations(rule_set)
    if problems:
        raise BuiltinRuleSetError(f"{where}: " + "; ".join(problems))
    rule_set.built_in = True
    rule_set.create_time.FromDatetime(_BUILTIN_TIME)
    rule_set.update_time.FromDatetime(_BUILTIN_TIME)
    # The etag follows the content: it changes exactly when a release changes the data.
    digest = hashlib.sha256(rule_set.SerializeToString(deterministic=True)).hexdigest()
    rule_set.etag = digest[:20]
    return rule_set


def violations(rule_set: rule_sets_pb2.RuleSet) -> list[str]:
    """The protovalidate rules ``rule_set`` breaks, as ``field: message`` lines (none: valid)."""
    import protovalidate  # first use only: a worker that never reads a rule set skips it

    try:
        protovalidate.validate(rule_set)
    except protovalidate.ValidationError as exc:
        return [f"{_field(v.proto)}: {v.proto.message}" for v in exc.violations]
    return []


def _field(violation: Any) -> str:
    """``processes[3].work_products`` of a buf.validate.Violation ("" for the message)."""
    if violation.field is None:
        return ""
    out = []
    for element in violation.field.elements:
        index = element.subscript
        out.append(element.field_name + (f"[{index.value}]" if index is not None else ""))
    return ".".join(out)


@functools.cache
def builtin_rule_sets() -> Mapping[str, rule_sets_pb2.RuleSet]:
    """The built-in rule sets by id, read from the package data on first use.

    The messages are shared: callers copy one (``CopyFrom``) before changing it.
    """
    package = resources.files(__package__)
    found = {
        rule_set_id: _parse(rule_set_id, (package / f"{rule_set_id}.toml").read_text("utf-8"))
        for rule_set_id in sorted(BUILTIN_IDS)
    }
    return MappingProxyType(found)

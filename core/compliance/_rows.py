"""Custom rule sets in the database: ``rule_sets`` rows <-> ``RuleSet`` messages, and the
one read both the API server (GetRuleSet's origin) and the compliance worker use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from agentic.compliance.v1 import rule_sets_pb2
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.compliance._builtin import BUILTIN_IDS, builtin_rule_sets
from core.db import RuleSetRow, utc


def etag_of(rule_set_id: str, version: int) -> str:
    """Opaque etag of a custom rule set at a version (derived like projects' and artifacts')."""
    return hashlib.sha256(f"{rule_set_id}:{version}".encode()).hexdigest()[:20]


def encode_processes(processes: Iterable[rule_sets_pb2.Process]) -> bytes:
    """The ``rule_sets.processes`` column value: a RuleSet holding only these processes."""
    return rule_sets_pb2.RuleSet(processes=processes).SerializeToString(deterministic=True)


def decode_processes(data: bytes) -> list[rule_sets_pb2.Process]:
    """The processes of a ``rule_sets.processes`` column value."""
    holder = rule_sets_pb2.RuleSet()
    holder.ParseFromString(data)
    return list(holder.processes)


def to_proto(row: RuleSetRow) -> rule_sets_pb2.RuleSet:
    """The API message of a custom rule set row (version is the row's, as a string)."""
    rule_set = rule_sets_pb2.RuleSet(
        id=row.id,
        name=row.name,
        version=str(row.version),
        description=row.description,
        processes=decode_processes(row.processes),
        built_in=False,
        source=row.source,
        etag=etag_of(row.id, row.version),
        owner_id=row.owner_id,
    )
    rule_set.create_time.FromDatetime(utc(row.create_time))
    rule_set.update_time.FromDatetime(utc(row.update_time))
    return rule_set


def load_rule_set(
    engine_or_session: Engine | Session, rule_set_id: str
) -> rule_sets_pb2.RuleSet | None:
    """The rule set with this id: built-in from the package data, custom from ``rule_sets``.

    None when there is none. A built-in id never touches the database. The result is the
    caller's own copy. Database errors propagate (the caller maps them: the server to
    UNAVAILABLE, a worker to TransientError).
    """
    if rule_set_id in BUILTIN_IDS:
        rule_set = rule_sets_pb2.RuleSet()
        rule_set.CopyFrom(builtin_rule_sets()[rule_set_id])
        return rule_set
    if isinstance(engine_or_session, Session):
        row = engine_or_session.get(RuleSetRow, rule_set_id)
        return None if row is None else to_proto(row)
    with Session(engine_or_session) as session:
        row = session.get(RuleSetRow, rule_set_id)
        return None if row is None else to_proto(row)

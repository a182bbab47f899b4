"""The origins a cache warming task can load: per cache namespace, how to enumerate every
key (a ``warm = "all"`` policy) and how to load one key's value.

Each load is the very read the API server's cache miss does (``core.compliance.
load_rule_set``, ``core.projects.load_project``), so a warmed value is byte-identical to
what a read through the server would have cached. A namespace missing here cannot be
warmed by a worker (``artifacts`` and ``project_lists`` today): see ``workers.cache_warm``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.cache import Namespace
from core.compliance import load_rule_set
from core.db import ProjectRow, RuleSetRow
from core.projects import load_project

__all__ = ["ORIGINS", "Origin"]

# Ids per enumeration query: a keyset walk, so memory stays bounded by the batch.
_ID_BATCH = 500


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one namespace's values come from."""

    keys: Callable[[Engine], Iterator[bytes]]
    """Every key the origin has, in id order (read in batches)."""
    load: Callable[[Engine, bytes], bytes | None]
    """The value to cache for a key (serialized message), None when there is none."""


def _ids(column: InstrumentedAttribute[str]) -> Callable[[Engine], Iterator[bytes]]:
    def walk(engine: Engine) -> Iterator[bytes]:
        after = ""
        while True:  # bounded: each batch moves ``after`` forward through a finite table
            with Session(engine) as session:
                batch = list(
                    session.scalars(
                        select(column).where(column > after).order_by(column).limit(_ID_BATCH)
                    )
                )
            yield from (i.encode() for i in batch)
            if len(batch) < _ID_BATCH:
                return
            after = batch[-1]

    return walk


def _rule_set(engine: Engine, key: bytes) -> bytes | None:
    found = load_rule_set(engine, key.decode())
    return None if found is None else found.SerializeToString()


def _project(engine: Engine, key: bytes) -> bytes | None:
    found = load_project(engine, key.decode())
    return None if found is None else found.SerializeToString()


ORIGINS: dict[str, Origin] = {
    # Custom rule sets only: built-in ones are never cached (they are data in the code).
    Namespace.RULE_SETS.value: Origin(keys=_ids(RuleSetRow.id), load=_rule_set),
    Namespace.PROJECTS.value: Origin(keys=_ids(ProjectRow.id), load=_project),
}

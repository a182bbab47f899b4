"""Which backups ``prune`` deletes: pure rules, no files.

Kept: the ``keep_last`` newest, every backup younger than ``keep_days``, and always the
newest verified one. Nothing is deleted while the newest backup is unverified: a new
backup that has not proven readable must not cost the old ones that have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Candidate", "Plan", "plan"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the rules know of one backup."""

    name: str
    create_time: datetime
    verified: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """The rules' answer: names to keep and to delete (newest first), and why nothing is
    deleted when that is so."""

    keep: tuple[str, ...]
    delete: tuple[str, ...]
    held_back: str = ""


def plan(backups: Sequence[Candidate], *, keep_last: int, keep_days: float, now: datetime) -> Plan:
    """Apply the retention rules to ``backups`` (any order)."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, not {keep_last}")
    newest_first = sorted(backups, key=lambda b: (b.create_time, b.name), reverse=True)
    names = tuple(b.name for b in newest_first)
    if not newest_first:
        return Plan((), ())
    if not newest_first[0].verified:
        return Plan(names, (), held_back=f"the newest backup {names[0]} is not verified")
    cutoff = now - timedelta(days=keep_days)
    newest_verified = next(b.name for b in newest_first if b.verified)
    keep = {b.name for b in newest_first[:keep_last]}
    keep |= {b.name for b in newest_first if b.create_time > cutoff}
    keep.add(newest_verified)
    return Plan(
        tuple(n for n in names if n in keep),
        tuple(n for n in names if n not in keep),
    )

"""The beat's schedule: fixed intervals on the UTC epoch, and each fire's request_id.

Format (``AGENTIC_SCHEDULE``)::

    health_probe=1m, retention=1d@3h, backup=off

A comma-separated list of ``job=EVERY[@OFFSET]`` or ``job=off``. ``EVERY`` and ``OFFSET``
are whole seconds with a unit (``s``, ``m``, ``h``, ``d``; a bare number is seconds). A job
fires at every instant ``t`` with ``t = OFFSET (mod EVERY)``, counted in seconds of the Unix
epoch (UTC): ``1d@3h`` is 03:00 UTC every day, ``1h@15m`` is a quarter past every hour,
``2s`` every even second. ``off`` declares the job but pauses it.

Why intervals on the epoch and not cron: the fire times are one integer division away
(``latest``), identical on every host and after every restart without stored state, and
there is nothing that a calendar, a time zone or a leap day can move (Celery's crontab
and DST bugs are of this kind). The cost is expressiveness: "every Monday" is ``7d@4d``
(1970-01-01 was a Thursday) and "the 1st of the month" does not exist. None of the jobs
needs more.

Each fire is identified by its job and scheduled instant: :func:`request_id` is a UUID5 of
both, so a fire submitted twice (two leaders for a moment, a retry after a lost reply, a
takeover that repeats the last fire) is one task: the API answers the same request_id with
the same task.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["FIRE_NAMESPACE", "Entry", "parse_duration", "parse_schedule", "request_id"]

FIRE_NAMESPACE = uuid.UUID("5f0c3f7e-2b8e-5a35-9d0c-6c1b9a0e4b11")
"""UUID5 namespace of fire request_ids (fixed: changing it would re-submit every fire)."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)\s*([smhd]?)")
_JOB = re.compile(r"[a-z][a-z0-9_]{0,62}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_duration(raw: str) -> int:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"1d"`` or ``"30"`` -> whole seconds."""
    match = _DURATION.fullmatch(raw.strip())
    if match is None:
        raise ValueError(f"{raw!r} is not a duration like 30s, 5m, 1h or 1d")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One job of the schedule."""

    job: str
    """The job's name (``workers.beat`` knows what each one submits)."""
    every_seconds: int
    """The interval; 0 when paused."""
    offset_seconds: int = 0
    """Where in each interval the job fires, from the epoch (0 <= offset < every)."""

    @property
    def paused(self) -> bool:
        """Declared ``off``: never fires."""
        return self.every_seconds == 0

    def latest(self, now: datetime) -> datetime | None:
        """The most recent scheduled instant at or before ``now`` (aware); None when paused."""
        if self.paused:
            return None
        seconds = _epoch_seconds(now)
        fired = (seconds - self.offset_seconds) // self.every_seconds
        return _EPOCH + timedelta(seconds=fired * self.every_seconds + self.offset_seconds)

    def next_after(self, instant: datetime) -> datetime | None:
        """The first scheduled instant strictly after ``instant``; None when paused."""
        latest = self.latest(instant)
        return None if latest is None else latest + timedelta(seconds=self.every_seconds)

    def describe(self) -> str:
        """The entry as it is written in ``AGENTIC_SCHEDULE``."""
        if self.paused:
            return f"{self.job}=off"
        offset = f"@{self.offset_seconds}s" if self.offset_seconds else ""
        return f"{self.job}={self.every_seconds}s{offset}"


def parse_schedule(raw: str) -> tuple[Entry, ...]:
    """``AGENTIC_SCHEDULE``'s text -> its entries; ValueError naming a bad entry."""
    entries: dict[str, Entry] = {}
    for part in filter(None, (piece.strip() for piece in raw.split(","))):
        job, sep, value = (text.strip() for text in part.partition("="))
        if not sep or not _JOB.fullmatch(job):
            raise ValueError(f"entry {part!r} is not job=EVERY[@OFFSET] or job=off")
        if job in entries:
            raise ValueError(f"job {job!r} is scheduled twice")
        if value == "off":
            entries[job] = Entry(job, 0)
            continue
        every_text, _, offset_text = value.partition("@")
        try:
            every = parse_duration(every_text)
            offset = parse_duration(offset_text) if offset_text else 0
        except ValueError as exc:
            raise ValueError(f"entry {part!r}: {exc}") from None
        if every < 1:
            raise ValueError(f"entry {part!r}: the interval must be at least 1s")
        if offset >= every:
            raise ValueError(f"entry {part!r}: the offset must be less than the interval")
        entries[job] = Entry(job, every, offset)
    return tuple(entries.values())


def request_id(job: str, scheduled: datetime) -> str:
    """The request_id of ``job``'s fire at ``scheduled``: the same for every beat process."""
    return str(uuid.uuid5(FIRE_NAMESPACE, f"{job}/{_epoch_seconds(scheduled)}"))


def _epoch_seconds(instant: datetime) -> int:
    """Whole seconds since the epoch; only aware times (a naive one has no time zone)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("schedule times must be aware (UTC)")
    return int((instant - _EPOCH) // timedelta(seconds=1))

"""A leader lease in the database: at most one holder at a time, on SQLite and PostgreSQL.

One row of ``scheduler_leases`` per lease name. Every change is one conditional UPDATE
(compare-and-set on the row's holder and expiry), so two contenders can never both win:

- **renew**: ``SET expire_time = now + ttl WHERE holder = me AND expire_time >= now``;
- **take over**: ``SET holder = me, term = term + 1, ... WHERE holder = '' OR expire_time < now``;
- **release** (graceful stop): ``SET holder = '', expire_time = now WHERE holder = me``.

On PostgreSQL a second UPDATE of the same row waits for the first to commit and then
re-checks its WHERE on the new row (READ COMMITTED), so it matches nothing; SQLite runs one
writer at a time. The row is created on first use (``INSERT ... ON CONFLICT DO NOTHING``).

Expiry uses the contenders' clocks (UTC), like the task claims in ``core.tasks``: hosts must
keep their clocks in sync (NTP). A holder acts only while its lease is valid by its own
monotonic clock, counted from *before* the UPDATE it won was sent, so it stops acting no
later than a standby may take over (as long as the clocks agree).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, Executable, Update, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.db import SchedulerLeaseRow, utc

__all__ = ["LeaderLease", "Lease"]


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease won or renewed: its term and until when (monotonic) the holder may act."""

    term: int
    """Counts up with every change of holder: one number per leadership."""
    valid_until: float
    """``time.monotonic()`` value after which the holder must stop acting."""
    taken_over: bool
    """This call started the leadership (as opposed to renewing it)."""


class LeaderLease:
    """Compete for the lease ``name`` as ``holder`` (a unique id of this process)."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        holder: str,
        *,
        ttl_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not holder:
            raise ValueError("a lease holder needs a non-empty id")
        self._engine = engine
        self._name = name
        self.holder = holder
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._monotonic = monotonic
        self._created = False

    def acquire(self) -> Lease | None:
        """Renew the lease if this holder has it, else take it if it is free or expired.

        None: someone else holds it. Raises the database's error when it cannot be
        reached; the caller then counts itself as not leading.
        """
        started = self._monotonic()
        now = self._clock()
        expire = now + self._ttl
        row = SchedulerLeaseRow
        with self._engine.begin() as connection:
            if not self._created:
                connection.execute(self._insert_if_missing(now))
                self._created = True
            renewed = connection.execute(
                self._where_name(update(row))
                .where(row.holder == self.holder, row.expire_time >= now)
                .values(expire_time=expire)
            ).rowcount
            taken = 0
            if not renewed:
                taken = connection.execute(
                    self._where_name(update(row))
                    .where(or_(row.holder == "", row.expire_time < now))
                    .values(
                        holder=self.holder, term=row.term + 1, acquire_time=now, expire_time=expire
                    )
                ).rowcount
            if not (renewed or taken):
                return None
            term = connection.execute(select(row.term).where(row.name == self._name)).scalar_one()
        return Lease(
            term=int(term),
            valid_until=started + self._ttl.total_seconds(),
            taken_over=bool(taken),
        )

    def release(self) -> bool:
        """Give the lease up (a graceful stop), so a standby takes it at its next poll."""
        row = SchedulerLeaseRow
        with self._engine.begin() as connection:
            released = connection.execute(
                self._where_name(update(row))
                .where(row.holder == self.holder)
                .values(holder="", expire_time=self._clock())
            ).rowcount
        return bool(released)

    def current(self) -> tuple[str, int, datetime] | None:
        """(holder, term, expire_time in UTC) as stored; None before anyone competed."""
        row = SchedulerLeaseRow
        with self._engine.connect() as connection:
            found = connection.execute(
                select(row.holder, row.term, row.expire_time).where(row.name == self._name)
            ).first()
        if found is None:
            return None
        holder, term, expire = found
        return str(holder), int(term), utc(expire)

    def _where_name(self, statement: Update) -> Update:
        return statement.where(SchedulerLeaseRow.name == self._name)

    def _insert_if_missing(self, now: datetime) -> Executable:
        values = {
            "name": self._name,
            "holder": "",
            "term": 0,
            "acquire_time": now,
            "expire_time": now,
        }
        if self._engine.dialect.name == "postgresql":
            return (
                pg_insert(SchedulerLeaseRow)
                .values(values)
                .on_conflict_do_nothing(index_elements=["name"])
            )
        return (
            sqlite_insert(SchedulerLeaseRow)
            .values(values)
            .on_conflict_do_nothing(index_elements=["name"])
        )

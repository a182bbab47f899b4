"""Database reads around a run: the server's origin counter and PostgreSQL's statistics.

Two independent counts of how often a variant went to the database:

* ``agentic_origin_loads_total{resource="project"}`` on the server's Prometheus port:
  every GetProject the cache did not answer (the hand-written cache-aside counts through
  the same base class). Exact, and the figure the targets use.
* PostgreSQL's cumulative statistics of the database: ``pg_stat_user_tables`` scans and
  rows read of the projects table and ``pg_stat_database`` (``xact_commit +
  xact_rollback``, ``tup_returned``). A backend flushes them at most once a second
  while busy, and an idle one only after 10 s (PostgreSQL 15), and
  ``pg_stat_force_next_flush()`` acts only on the calling backend. The snapshots are
  therefore taken right after the warm-up and right after the run, both at the offered
  rate: each misses at most about the last second of traffic before it, and the two
  misses roughly cancel. ``pg_stat_clear_snapshot()`` is called so a reading is never
  the cached snapshot of an earlier one. The other API servers of the stack share the
  database and are idle, but their background loops commit transactions of their own:
  the database-wide figures include them, the projects table's do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from tests._scrape import metric, metrics_text
from tests._support import libpq_url

__all__ = ["DbCounters", "read_counters"]

_CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class DbCounters:
    """Cumulative counters at one moment; subtract two for a run's figures."""

    origin_loads: float
    table_scans: int
    """``seq_scan + idx_scan`` of the projects table."""
    table_tuples: int
    """``seq_tup_read + idx_tup_fetch`` of the projects table: rows read from it."""
    xacts: int
    """``xact_commit + xact_rollback`` of the database (a read-only SQLAlchemy session
    ends in a rollback, so commits alone miss the reads)."""
    tup_returned: int

    def __sub__(self, other: DbCounters) -> DbCounters:
        """The change from ``other`` to this reading."""
        return DbCounters(
            self.origin_loads - other.origin_loads,
            self.table_scans - other.table_scans,
            self.table_tuples - other.table_tuples,
            self.xacts - other.xacts,
            self.tup_returned - other.tup_returned,
        )


def read_counters(database_url: str, metrics_port: int) -> DbCounters:
    """The origin counter of the server on ``metrics_port`` and the database's counters."""
    origin = metric(metrics_text(metrics_port), "agentic_origin_loads_total", resource="project")
    with psycopg.connect(
        libpq_url(database_url), autocommit=True, connect_timeout=_CONNECT_TIMEOUT_SECONDS
    ) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        table = conn.execute(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0),"
            " coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
            " FROM pg_stat_user_tables WHERE relname = 'projects'"
        ).fetchone()
        db = conn.execute(
            "SELECT xact_commit + xact_rollback, tup_returned FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return DbCounters(
        origin_loads=origin,
        table_scans=int(table[0]) if table else 0,
        table_tuples=int(table[1]) if table else 0,
        xacts=int(db[0]) if db else 0,
        tup_returned=int(db[1]) if db else 0,
    )

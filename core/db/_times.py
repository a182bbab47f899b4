"""Datetimes as the database hands them back."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utc"]


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime: SQLite hands ``DateTime(timezone=True)`` columns
    back naive, and every writer stores UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)

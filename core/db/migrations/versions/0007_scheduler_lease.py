"""Scheduler lease: the row the beat processes compete for, so exactly one schedules.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    """Add scheduler_leases."""
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("term", sa.BigInteger, nullable=False),
        sa.Column("acquire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_table("scheduler_leases")

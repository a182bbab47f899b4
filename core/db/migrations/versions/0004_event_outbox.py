"""The domain-event outbox: a change and its event commit in one transaction.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    """Add event_outbox (domain events the broker has not confirmed yet)."""
    op.create_table(
        "event_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("relay_time", sa.DateTime(timezone=True), nullable=False),
    )
    # The relay asks "which rows are due", oldest first.
    op.create_index("ix_event_outbox_relay_time", "event_outbox", ["relay_time"])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_event_outbox_relay_time", table_name="event_outbox")
    op.drop_table("event_outbox")

"""Audit events: who did what to the system through AdminService (and, later, the beat).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    """Add audit_events."""
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("request_json", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
    )
    op.create_index("ix_audit_events_create_time_id", "audit_events", ["create_time", "id"])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_audit_events_create_time_id", table_name="audit_events")
    op.drop_table("audit_events")

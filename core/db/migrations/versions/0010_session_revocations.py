"""Session revocations: logouts and an Administrator's "end every session of this subject".

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    """Add session_revocations."""
    op.create_table(
        "session_revocations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("issued_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("forget_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_by", sa.String(128), nullable=False),
    )
    op.create_index("ix_session_revocations_create_time", "session_revocations", ["create_time"])
    op.create_index("ix_session_revocations_forget_time", "session_revocations", ["forget_time"])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_session_revocations_forget_time", table_name="session_revocations")
    op.drop_index("ix_session_revocations_create_time", table_name="session_revocations")
    op.drop_table("session_revocations")

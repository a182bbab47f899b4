"""Rule sets: custom compliance rule sets (the built-in ones are data in core/compliance).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    """Add rule_sets."""
    op.create_table(
        "rule_sets",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("source", sa.String(500), nullable=False),
        sa.Column("processes", sa.LargeBinary, nullable=False),
        sa.Column("owner_id", sa.String(128), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.UniqueConstraint("name", name="uq_rule_sets_name"),
    )
    op.create_index("ix_rule_sets_create_time_id", "rule_sets", ["create_time", "id"])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_rule_sets_create_time_id", table_name="rule_sets")
    op.drop_table("rule_sets")

"""Object-level access: project members, and the project a task belongs to; and when a
pending task's run message was last queued (recovery of lost messages).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    """Add project_members (who besides the owner reaches a project) and tasks.project_id."""
    op.create_table(
        "project_members",
        sa.Column(
            "project_id",
            sa.String(36),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("member_id", sa.String(128), primary_key=True),
    )
    # "Which projects may this principal see" walks members by principal.
    op.create_index("ix_project_members_member_id", "project_members", ["member_id"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("project_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("dispatch_time", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_tasks_project_id", "tasks", ["project_id"])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_tasks_project_id", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("dispatch_time")
        batch.drop_column("project_id")
    op.drop_index("ix_project_members_member_id", table_name="project_members")
    op.drop_table("project_members")

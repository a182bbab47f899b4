"""Create the task pipeline's tables: tasks, task_events, task_outbox.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create tasks (with its listing indexes), its event log and the publish outbox."""
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("spec", sa.LargeBinary(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("progress_fraction", sa.Float(), nullable=False),
        sa.Column("progress_message", sa.Text(), nullable=False),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.LargeBinary(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        _time("cancel_time", nullable=True),
        sa.Column("claim_worker", sa.String(200), nullable=True),
        _time("claim_expire_time", nullable=True),
        _time("claim_time", nullable=True),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("auto_retries", sa.Integer(), nullable=False),
        _time("create_time"),
        _time("update_time"),
        _time("start_time", nullable=True),
        _time("end_time", nullable=True),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("request_id", name="uq_tasks_request_id"),
    )
    op.create_index("ix_tasks_create_time_id", "tasks", ["create_time", "id"])
    op.create_index("ix_tasks_owner_create_time_id", "tasks", ["owner_id", "create_time", "id"])
    op.create_index("ix_tasks_state_create_time_id", "tasks", ["state", "create_time", "id"])
    op.create_table(
        "task_events",
        sa.Column(
            "task_id",
            sa.String(36),
            sa.ForeignKey("tasks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sequence", sa.BigInteger(), primary_key=True),
        _time("time"),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "task_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "task_id",
            sa.String(36),
            sa.ForeignKey("tasks.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        _time("not_before"),
        _time("relay_time"),
        _time("create_time"),
    )
    op.create_index("ix_task_outbox_relay_time", "task_outbox", ["relay_time"])


def downgrade() -> None:
    """Drop the task tables."""
    op.drop_table("task_outbox")
    op.drop_table("task_events")
    op.drop_table("tasks")

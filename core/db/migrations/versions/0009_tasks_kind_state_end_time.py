"""An index for "the newest ended task of a kind in a state": the job and backup metrics.

The API server's collector exports, per scheduled job, the end time of its newest
succeeded and failed task, and the newest succeeded backup (BackupStale). Without this
index each of those reads scans every task in the state.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    """Add ix_tasks_kind_state_end_time."""
    op.create_index("ix_tasks_kind_state_end_time", "tasks", ["kind", "state", "end_time"])


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_tasks_kind_state_end_time", table_name="tasks")

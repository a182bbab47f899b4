"""Artifacts: documents and datasets whose bytes live in the object store.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    """Add artifacts (with their uploads) and artifact_work_products."""
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("declared_size", sa.BigInteger, nullable=True),
        sa.Column("declared_sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("object_key", sa.String(512), nullable=False),
        sa.Column("upload_id", sa.String(36), nullable=False, unique=True),
        sa.Column("committed_size", sa.BigInteger, nullable=False),
        sa.Column("store_state", sa.Text, nullable=False),
        sa.Column("writer_id", sa.String(36), nullable=True),
        sa.Column("writer_expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure_reason", sa.Text, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_artifacts_project_create_time_id", "artifacts", ["project_id", "create_time", "id"]
    )
    op.create_index("ix_artifacts_owner_state", "artifacts", ["owner_id", "state"])
    op.create_index("ix_artifacts_state_expire_time", "artifacts", ["state", "expire_time"])
    op.create_table(
        "artifact_work_products",
        sa.Column(
            "artifact_id",
            sa.String(36),
            sa.ForeignKey("artifacts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("work_product", sa.String(5), primary_key=True),
    )
    op.create_index(
        "ix_artifact_work_products_work_product", "artifact_work_products", ["work_product"]
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("ix_artifact_work_products_work_product", table_name="artifact_work_products")
    op.drop_table("artifact_work_products")
    op.drop_index("ix_artifacts_state_expire_time", table_name="artifacts")
    op.drop_index("ix_artifacts_owner_state", table_name="artifacts")
    op.drop_index("ix_artifacts_project_create_time_id", table_name="artifacts")
    op.drop_table("artifacts")

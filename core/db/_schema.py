"""The relational schema, as SQLAlchemy 2 typed mappings.

Alembic migrations under ``server/db/migrations`` are the authority for the live schema;
these mappings must match the newest migration (a test compares them).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every table."""


class ProjectRow(Base):
    """One project. ``version`` increments on every write and is the source of the etag."""

    __tablename__ = "projects"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_projects_owner_name"),
        # Keyset pagination walks (create_time, id); with an owner filter, (owner_id, ...).
        Index("ix_projects_create_time_id", "create_time", "id"),
        Index("ix_projects_owner_create_time_id", "owner_id", "create_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    owner_id: Mapped[str] = mapped_column(String(128), nullable=False)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class ProjectMemberRow(Base):
    """A principal that reaches a project besides its owner (object-level access)."""

    __tablename__ = "project_members"
    __table_args__ = (Index("ix_project_members_member_id", "member_id"),)

    project_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[str] = mapped_column(String(128), primary_key=True)


class TaskRow(Base):
    """One task and where it stands; the source of truth for its status (not Celery).

    ``last_sequence`` is both the newest event's number and the optimistic-concurrency
    version: every state change is ``UPDATE ... WHERE last_sequence = <read value>`` plus
    one ``task_events`` insert in the same transaction, so events never gap or repeat.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("request_id", name="uq_tasks_request_id"),
        # ListTasks walks (create_time, id) newest first, optionally within an owner/state.
        Index("ix_tasks_create_time_id", "create_time", "id"),
        Index("ix_tasks_owner_create_time_id", "owner_id", "create_time", "id"),
        Index("ix_tasks_state_create_time_id", "state", "create_time", "id"),
        # The newest ended task of a kind in a state (the job and backup metrics).
        Index("ix_tasks_kind_state_end_time", "kind", "state", "end_time"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[int] = mapped_column(Integer, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    owner_id: Mapped[str] = mapped_column(String(128), nullable=False)
    project_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    request_id: Mapped[str] = mapped_column(String(36), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    spec: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    progress_fraction: Mapped[float] = mapped_column(Float, nullable=False)
    progress_message: Mapped[str] = mapped_column(Text, nullable=False)
    result: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    error: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False)
    cancel_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    claim_worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    claim_expire_time: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    claim_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Claims of the current attempt; each one past the first means a worker died holding
    # it. Past AGENTIC_TASK_MAX_DELIVERIES the attempt is failed as poison.
    deliveries: Mapped[int] = mapped_column(Integer, nullable=False)
    # Automatic retries (transient errors) since submit or the last RetryTask.
    auto_retries: Mapped[int] = mapped_column(Integer, nullable=False)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    start_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # When a PENDING task's run message was last re-queued by the recovery of lost
    # messages (None: only at submit, i.e. at create_time).
    dispatch_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TaskEventRow(Base):
    """One event of a task's log: a serialized ``agentic.tasks.v1.TaskEvent``."""

    __tablename__ = "task_events"

    task_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class TaskOutboxRow(Base):
    """A publish of (task_id, attempt) to the work queue that the broker has not confirmed.

    Written in the transaction that makes the task runnable; deleted once the broker
    confirmed the message. ``relay_time`` is when the relay may (re)publish it: a little
    after creation, so the fast path on the request gets the first try.
    """

    __tablename__ = "task_outbox"
    __table_args__ = (Index("ix_task_outbox_relay_time", "relay_time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[int] = mapped_column(Integer, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    relay_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class EventOutboxRow(Base):
    """A domain event committed with the change it describes, not yet confirmed by the broker.

    Written in the same transaction as the change, so a committed change always has its
    event either confirmed by the broker or here. The writer publishes it at once and
    deletes the row on the confirm; any replica's relay publishes rows whose
    ``relay_time`` has passed (pushing ``relay_time`` forward first, so two relays do not
    both take the same row). ``body`` is the event's JSON, exactly as it is published.
    """

    __tablename__ = "event_outbox"
    __table_args__ = (Index("ix_event_outbox_relay_time", "relay_time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(100), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    relay_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ArtifactRow(Base):
    """A document or dataset of a project; its bytes live in the object store.

    While ``state`` is ``uploading`` the row also carries the upload: ``upload_id`` (the
    ``uploads/<uuid>`` name), the durable ``committed_size`` with the store's opaque
    ``store_state`` to continue from, the writer's lease (``writer_id`` until
    ``writer_expire_time``: one stream at a time) and ``expire_time``. ``declared_size``
    and ``declared_sha256`` are what CreateUpload promised; ``size_bytes`` and ``sha256``
    are what finish verified.
    """

    __tablename__ = "artifacts"
    __table_args__ = (
        # ListArtifacts walks a project's artifacts newest first.
        Index("ix_artifacts_project_create_time_id", "project_id", "create_time", "id"),
        # Open uploads per principal; the expiry sweep.
        Index("ix_artifacts_owner_state", "owner_id", "state"),
        Index("ix_artifacts_state_expire_time", "state", "expire_time"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(36), nullable=False)
    owner_id: Mapped[str] = mapped_column(String(128), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    content_type: Mapped[str] = mapped_column(String(255), nullable=False)
    format: Mapped[str] = mapped_column(String(16), nullable=False, default="")
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    declared_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    declared_sha256: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    object_key: Mapped[str] = mapped_column(String(512), nullable=False)
    upload_id: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    committed_size: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    store_state: Mapped[str] = mapped_column(Text, nullable=False, default="")
    writer_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    writer_expire_time: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failure_reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class ArtifactWorkProductRow(Base):
    """An ASPICE work product (``17-11``) a document artifact provides (ListArtifacts filter)."""

    __tablename__ = "artifact_work_products"
    __table_args__ = (Index("ix_artifact_work_products_work_product", "work_product"),)

    artifact_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    work_product: Mapped[str] = mapped_column(String(5), primary_key=True)


class RuleSetRow(Base):
    """A custom compliance rule set (the built-in ones are data in ``core/compliance``).

    ``processes`` is an ``agentic.compliance.v1.RuleSet`` holding only its ``processes``,
    serialized: the rule set is always read and written whole, never queried by its
    contents, and proto bytes keep field numbers (a renamed field or enum value still
    reads) where JSON would keep names. ``version`` increments on every write and is the
    source of the etag.
    """

    __tablename__ = "rule_sets"
    __table_args__ = (
        UniqueConstraint("name", name="uq_rule_sets_name"),
        # ListRuleSets walks custom sets in (create_time, id) order.
        Index("ix_rule_sets_create_time_id", "create_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    source: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    processes: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    owner_id: Mapped[str] = mapped_column(String(128), nullable=False)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class SchedulerLeaseRow(Base):
    """A leader lease: who may act alone (the beat scheduler) until ``expire_time``.

    Taken and renewed only by conditional UPDATEs (``workers._leader``): the holder renews
    its own row; anyone takes a row whose ``expire_time`` has passed, and ``term`` then
    counts up, so each leadership has its own number (logs, metrics, the runbook). An empty
    ``holder`` is a lease nobody has taken yet, or one given up on shutdown.
    """

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    term: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    acquire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AuditEventRow(Base):
    """One recorded operator action (an AdminService call) or scheduled job run.

    Append-only: written by ``server.admin._audit`` in its own transaction, after the
    action's outcome is known, and read newest first by ListAuditEvents (keyset over
    ``(create_time, id)`` like every listing). ``request_json`` is the request in proto3
    JSON, ``outcome`` a gRPC status code name.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_create_time_id", "create_time", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    subject: Mapped[str] = mapped_column(String(128), nullable=False)
    action: Mapped[str] = mapped_column(String(200), nullable=False)
    request_json: Mapped[str] = mapped_column(Text, nullable=False)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)


class SessionRevocationRow(Base):
    """One ended session (``session_id`` set: a logout) or every session of ``subject``
    issued before ``issued_before`` (``session_id`` empty: an Administrator's revocation).

    Append-only, written by ``server.sessions``. Every API server loads the rows whose
    ``forget_time`` is still ahead at start, then reads the rows created since its last
    read twice a second (``create_time`` is indexed for that), so a revocation made on one
    replica is refused on all of them within a second without the cache. ``forget_time``
    is when no token the row refuses can still be valid: the server forgets the row then.
    """

    __tablename__ = "session_revocations"
    __table_args__ = (
        Index("ix_session_revocations_create_time", "create_time"),
        Index("ix_session_revocations_forget_time", "forget_time"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    subject: Mapped[str] = mapped_column(String(128), nullable=False)
    session_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    issued_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    forget_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_by: Mapped[str] = mapped_column(String(128), nullable=False)

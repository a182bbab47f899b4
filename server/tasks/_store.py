"""Task storage for the API side: one ``TaskStore`` over four concepts, each in its module.

- ``_store_submit``: submits, many per transaction (``submit``, ``submit_many``);
- ``_store_reads``: one task, a page, a task's events, the metrics gauges;
- ``_store_operator``: CancelTask and RetryTask;
- ``_store_relay``: the outbox rows the relay publishes and the backstops that re-queue.

Plain synchronous code that knows nothing about gRPC or the broker; the facade runs it in
the database thread pool. Every change goes through ``core.tasks._log``: one row update
plus one event per transaction, guarded by ``last_sequence``.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from server.tasks._store_operator import OperatorActions
from server.tasks._store_reads import Gauges, Page, Reads, task_not_found
from server.tasks._store_relay import Relay
from server.tasks._store_submit import NewTask, Submits, Written


class TaskStore:
    """Task operations of the API server on one SQLAlchemy engine.

    The operations are the bound methods of the four parts, so each keeps its signature
    and docstring in the module that owns it; the parts share one session factory.
    """

    def __init__(self, engine: Engine) -> None:
        sessions = sessionmaker(engine, expire_on_commit=False)
        submits = Submits(engine)
        reads = Reads(sessions)
        operator = OperatorActions(sessions)
        relay = Relay(engine, sessions)
        self.submit = submits.submit
        self.submit_many = submits.submit_many
        self.get = reads.get
        self.page = reads.page
        self.check_page_token = reads.check_page_token
        self.events_after = reads.events_after
        self.gauges = reads.gauges
        self.cancel = operator.cancel
        self.retry = operator.retry
        self.due_publishes = relay.due_publishes
        self.published = relay.published
        self.publish_failed = relay.publish_failed
        self.reap_abandoned = relay.reap_abandoned
        self.recover_pending = relay.recover_pending


__all__ = [
    "Gauges",
    "NewTask",
    "Page",
    "TaskStore",
    "Written",
    "task_not_found",
]

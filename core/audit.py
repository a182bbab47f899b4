"""Writing the audit log: who did what to the system, when, and how it ended.

One row of ``audit_events`` per action, in its own transaction, written after the
action's outcome is known: a refused action is recorded too, and a failed audit write
never undoes an action that happened (it is logged and the action's answer stands). The
API server records every admin call (``server.admin``), the beat every scheduled job run
(subject ``beat/<holder>``, action ``job:<name>``); ``AdminService.ListAuditEvents`` reads
them back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from core.db import AuditEventRow
from core.rpc import ApiError

__all__ = ["MAX_REQUEST_CHARS", "AuditWriter", "audited"]

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_REQUEST_CHARS = 4000
"""Longest request summary kept: the audited requests are small; this bounds a hostile one."""


class AuditWriter:
    """Appends audit events on one engine."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def record(self, *, subject: str, action: str, request_json: str, outcome: str) -> None:
        """Append one event now; a failure is logged, never raised (see the module doc)."""
        row = AuditEventRow(
            id=str(uuid.uuid4()),
            create_time=datetime.now(UTC),
            subject=subject[:128],
            action=action[:200],
            request_json=request_json[:MAX_REQUEST_CHARS],
            outcome=outcome[:32],
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
        except Exception:
            log.exception("could not record the audit event %s %s %s", subject, action, outcome)

    def record_job_run(
        self, *, subject: str, job: str, summary: Mapping[str, Any], outcome: str
    ) -> None:
        """One scheduled job run: action ``job:<job>``, ``summary`` as sorted JSON."""
        self.record(
            subject=subject,
            action=f"job:{job}",
            request_json=json.dumps(dict(summary), sort_keys=True, default=str),
            outcome=outcome,
        )


async def audited(action: Awaitable[T], record: Callable[[str], Awaitable[None]]) -> T:
    """Run ``action`` and then ``record`` its outcome, whether it returned or raised.

    The outcome is ``OK``, the gRPC code name of an ``ApiError`` (a refused action is
    recorded too), ``CANCELLED`` when the caller went away (the action may have taken
    effect), and ``INTERNAL`` for anything else; the action's answer or error stands.
    """
    outcome = "INTERNAL"
    try:
        result = await action
        outcome = "OK"
        return result
    except ApiError as error:
        outcome = error.code.name
        raise
    except asyncio.CancelledError:
        outcome = "CANCELLED"
        raise
    finally:
        await record(outcome)

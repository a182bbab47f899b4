"""SessionService's operations, and the poller that keeps every server's revocations current.

A revocation is written to ``session_revocations`` with its domain event
(``session_revocation.created``, through the outbox) in one transaction, then applied to
this server's ``RevocationList`` at once and audited. Every server reads the rows created
since its last read every ``poll_seconds`` (0.5 s by default), so a revocation made on
one replica is refused on all of them within a second, with or without the cache and the
broker. (The domain event is for other consumers; a server does not wait for it.)

Each read reaches back ``_OVERLAP_SECONDS`` before the previous one: a row committed
late (a slow transaction) or stamped by a replica whose clock is a little behind is
still seen; rows already known are skipped by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from core.audit import AuditWriter, audited
from core.db import in_database_thread
from core.events import EventRelay
from core.rpc import FailedPrecondition, Unavailable
from server.auth import Principal
from server.sessions._activity import ActivityTracker
from server.sessions._revocations import Revocation, RevocationList, RevocationStore

__all__ = ["SERVICE", "Sessions"]

log = logging.getLogger(__name__)

SERVICE = "/agentic.sessions.v1.SessionService/"
DOMAIN = "agentic.sessions.v1"
_OVERLAP_SECONDS = 60.0
# What is known of idle sessions is dropped about this often (a pass over a dict).
_FORGET_EVERY_SECONDS = 60.0

T = TypeVar("T")


def _unavailable() -> Unavailable:
    return Unavailable(
        "the database is unavailable or timed out; the session was not revoked, try again",
        reason="DATABASE_UNAVAILABLE",
        domain=DOMAIN,
    )


class Sessions:
    """Revocations (write, load, poll) and their audit, over one engine."""

    def __init__(
        self,
        store: RevocationStore,
        executor: Executor,
        *,
        relay: EventRelay,
        audit: AuditWriter,
        revocations: RevocationList,
        tracker: ActivityTracker | None,
        retain_seconds: float,
        poll_seconds: float,
        leeway_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._executor = executor
        self._relay = relay
        self._audit = audit
        self.revocations = revocations
        self.tracker = tracker
        self._retain = retain_seconds
        self._poll = poll_seconds
        self._leeway = leeway_seconds
        self._clock = clock
        self._read_from: float | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def load(self) -> int:
        """Read every live revocation (blocking; at start, before serving): how many."""
        started = self._clock()
        loaded = self.revocations.add_all(self._store.live(started))
        self._read_from = started - _OVERLAP_SECONDS
        return loaded

    def poll_once(self) -> list[Revocation]:
        """Read the revocations created since the last read (blocking)."""
        started = self._clock()
        since = started - _OVERLAP_SECONDS if self._read_from is None else self._read_from
        rows = self._store.created_since(since)
        self._read_from = started - _OVERLAP_SECONDS
        return rows

    def start(self) -> None:
        """Poll on the running loop, outside any request's context."""
        self._task = asyncio.get_running_loop().create_task(
            self._forever(), name="session-revocations", context=contextvars.Context()
        )

    async def stop(self) -> None:
        """Stop polling and cancel the background activity writes."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.tracker is not None:
            await self.tracker.close()

    async def revoke_session(self, principal: Principal, request_json: str) -> Revocation:
        """End the caller's own session (logout)."""

        async def action() -> Revocation:
            if principal.session_id is None:
                raise FailedPrecondition(
                    "this token has no session to end (a session-less service token)",
                    reason="NO_SESSION",
                    domain=DOMAIN,
                )
            now = self._clock()
            forget_at = now + self._retain
            if principal.expires_at is not None:
                forget_at = max(forget_at, principal.expires_at + self._leeway)
            return await self._add(
                Revocation.new(
                    subject=principal.subject,
                    session_id=principal.session_id,
                    now=now,
                    forget_at=forget_at,
                    revoked_by=principal.subject,
                )
            )

        return await self._audited("RevokeSession", principal, request_json, action())

    async def revoke_sessions(
        self,
        subject: str,
        issued_before: float | None,
        principal: Principal,
        request_json: str,
    ) -> Revocation:
        """End every session of ``subject`` issued before ``issued_before`` (None: now)."""

        async def action() -> Revocation:
            now = self._clock()
            cutoff = now if issued_before is None else issued_before
            return await self._add(
                Revocation.new(
                    subject=subject,
                    issued_before=cutoff,
                    now=now,
                    forget_at=max(now, cutoff) + self._retain,
                    revoked_by=principal.subject,
                )
            )

        return await self._audited("RevokeSessions", principal, request_json, action())

    async def _add(self, revocation: Revocation) -> Revocation:
        outboxed = await self._run(self._store.add, revocation)
        self.revocations.add(revocation)  # refused here before the answer goes out
        await self._run(self._relay.publish_now, [outboxed])
        log.info(
            "revoked %s of %s (by %s)",
            f"session {revocation.session_id}" if revocation.session_id else "every session",
            revocation.subject,
            revocation.revoked_by,
        )
        return revocation

    async def _audited(
        self, method: str, principal: Principal, request_json: str, action: Awaitable[Revocation]
    ) -> Revocation:
        async def record(outcome: str) -> None:
            # AuditWriter.record logs a failure and never raises (core.audit).
            await asyncio.get_running_loop().run_in_executor(
                self._executor,
                functools.partial(
                    self._audit.record,
                    subject=principal.subject,
                    action=SERVICE + method,
                    request_json=request_json,
                    outcome=outcome,
                ),
            )

        return await audited(action, record)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await in_database_thread(
            self._executor, functools.partial(fn, *args), unavailable=_unavailable
        )

    async def _forever(self) -> None:
        loop = asyncio.get_running_loop()
        forgot_at = self._clock()
        while not self._stopping.is_set():
            try:
                rows = await loop.run_in_executor(self._executor, self.poll_once)
                new = self.revocations.add_all(rows)
                if new:
                    log.info("%d new session revocation(s) from the database", new)
            except Exception:  # database down: what we know stands; say so, keep going
                log.warning("reading session revocations failed", exc_info=True)
            now = self._clock()
            if now - forgot_at >= _FORGET_EVERY_SECONDS:
                forgot_at = now
                self.revocations.prune(now)
                if self.tracker is not None:
                    self.tracker.forget_idle()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll)

"""Idle sessions: the last activity of each session, in the cache sidecar's ``sessions``
namespace, with this server's own knowledge in front of it.

The rule. A session's last activity is the latest of: its token's ``iat`` (a token just
issued is activity), the last call this server admitted for it, and the last activity
recorded in the sidecar (written by any replica). A call is refused as expired when that
is longer ago than the idle timeout. A missing record is therefore "expired" only for a
session whose token is older than the idle timeout and that this server has not seen
within it: the first call of a new session is never refused, and neither is a session
this server keeps seeing while the cache is flushed.

The cost. The sidecar is read (awaited) only when this server has no evidence of its own:
the first call here of a session whose token is older than the timeout, or a call after
this server saw none for the timeout. Every other call is a dictionary lookup. The
activity is written at most once per touch interval per session and server, on a
background task the call never waits for. A session thus expires between the idle
timeout minus the touch interval and the idle timeout after its last call.

Degradation. When the sidecar or Memcached cannot answer, the idle timeout is not
enforced (the call is admitted and ``agentic_session_idle_unchecked_total`` counts it);
revocation never depends on the cache (``server.sessions._revocations``).

Writing a record. The sidecar has no plain "set" (fills go through leases, so a fill can
never resurrect an invalidated value): a write invalidates a key, takes its lease and
fills the new record. So that no reader ever finds a live session without a record in
that gap, each session has two keys (``<sid>#0``, ``<sid>#1``): a write replaces the
older of the two, a read takes the newer. Both carry the first-seen time, which a write
keeps. A reader that finds a key empty fills a cached "not found" under the lease it
got, so nobody waits for that lease. The namespace's
``ttl_seconds`` (the sidecar's policy, never chosen here) must be at least the idle
timeout; a record that lives longer is still judged by the time it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.cache import CacheClient, CacheClientError, CacheRead, CacheRejected, Outcome
from server.sessions._metrics import ACTIVITY_WRITES, IDLE_UNCHECKED

__all__ = ["SESSIONS_NAMESPACE", "ActivityTracker", "Verdict"]

log = logging.getLogger(__name__)

SESSIONS_NAMESPACE = "sessions"
"""The sidecar namespace of activity records (``cache_sidecar/namespaces.toml``)."""
# Writes in flight at once; past it a touch waits for the next call of its session.
_MAX_WRITES_IN_FLIGHT = 256
# Sessions remembered here; past it the idle ones, then the longest known, are forgotten.
_MAX_SESSIONS = 100_000
_WARN_INTERVAL_SECONDS = 60.0


@dataclass(slots=True)
class _Seen:
    last_call: float
    """When this server last admitted a call of the session (Unix seconds)."""
    first_seen: float
    """The earliest start of the session known here (its tokens' iat, the record's)."""
    written_at: float | None = None
    """When the last write of its activity started here; None: never."""
    writing: bool = False


class Verdict:
    """What the idle check found (plain strings: they are also metric label values)."""

    ACTIVE = "active"
    EXPIRED = "expired"
    UNCHECKED = "unchecked"


def encode_record(last_activity: float, first_seen: float) -> bytes:
    """The value stored per session: ``<last activity> <first seen>`` in Unix seconds."""
    return f"{last_activity:.3f} {first_seen:.3f}".encode()


def decode_record(value: bytes) -> tuple[float, float] | None:
    """(last activity, first seen) of a stored value; None when it is not one."""
    try:
        last, first = value.decode().split()
        return float(last), float(first)
    except (UnicodeDecodeError, ValueError):
        return None


def _slot_keys(session_id: str) -> tuple[bytes, bytes]:
    return f"{session_id}#0".encode(), f"{session_id}#1".encode()


@dataclass(frozen=True, slots=True)
class _Slot:
    """One of a session's two record keys, as a read found it."""

    key: bytes
    read: CacheRead

    @property
    def record(self) -> tuple[float, float] | None:
        """(last activity, first seen) of a HIT holding a record; None otherwise."""
        return decode_record(self.read.value) if self.read.outcome is Outcome.HIT else None


class ActivityTracker:
    """Decides whether a session is idle, and records its activity (see the module doc)."""

    def __init__(
        self,
        cache: CacheClient,
        *,
        idle_seconds: float,
        touch_interval_seconds: float,
        clock: Callable[[], float] = time.time,
        max_sessions: int = _MAX_SESSIONS,
    ) -> None:
        self._cache = cache
        self._idle = idle_seconds
        self._touch = touch_interval_seconds
        self._clock = clock
        self._max_sessions = max_sessions
        self._seen: dict[str, _Seen] = {}
        # Recently found expired: refused without asking the sidecar again for a while.
        self._expired: dict[str, float] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._warned_at = -_WARN_INTERVAL_SECONDS

    def active_sessions(self) -> int:
        """Sessions with a call here within the idle timeout."""
        now = self._clock()
        return sum(1 for seen in list(self._seen.values()) if now - seen.last_call <= self._idle)

    def first_seen(self, session_id: str) -> float | None:
        """The earliest start of the session known here; None if unknown."""
        seen = self._seen.get(session_id)
        return None if seen is None else seen.first_seen

    async def check(self, session_id: str, issued_at: float) -> str:
        """The verdict on a call of ``session_id`` (token ``iat`` ``issued_at``) now.

        ACTIVE and UNCHECKED calls count as activity; EXPIRED ones do not.
        """
        now = self._clock()
        seen = self._seen.get(session_id)
        if seen is not None and now - seen.last_call <= self._idle:
            verdict = Verdict.ACTIVE  # our own evidence: the common case, no I/O
        elif now - issued_at <= self._idle:
            verdict = Verdict.ACTIVE  # a recent token is activity (a new session's first call)
        else:
            verdict = await self._ask(session_id, now)
        if verdict == Verdict.EXPIRED:
            self._seen.pop(session_id, None)
            return verdict
        seen = self._seen.get(session_id)  # _ask may have put a fresh one there
        if seen is None:
            seen = self._remember(session_id, _Seen(last_call=now, first_seen=issued_at))
        seen.last_call = now
        seen.first_seen = min(seen.first_seen, issued_at)
        if not seen.writing and (seen.written_at is None or now - seen.written_at >= self._touch):
            self._write_soon(session_id, seen, now)
        return verdict

    def forget_idle(self) -> int:
        """Drop what is known of sessions idle here past the timeout; how many."""
        now = self._clock()
        stale = [sid for sid, s in self._seen.items() if now - s.last_call > self._idle]
        for sid in stale:
            if not self._seen[sid].writing:
                del self._seen[sid]
        for sid in [sid for sid, until in self._expired.items() if until <= now]:
            del self._expired[sid]
        return len(stale)

    async def close(self) -> None:
        """Cancel the writes in flight."""
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)

    def _remember(self, session_id: str, seen: _Seen) -> _Seen:
        if len(self._seen) >= self._max_sessions:
            self.forget_idle()
            while len(self._seen) >= self._max_sessions:
                del self._seen[next(iter(self._seen))]  # insertion order: oldest first
        self._seen[session_id] = seen
        return seen

    async def _ask(self, session_id: str, now: float) -> str:
        """The sidecar's verdict, for a session without evidence here."""
        until = self._expired.get(session_id)
        if until is not None and until > now:
            return Verdict.EXPIRED
        if not self._cache.reachable():
            return self._unchecked("the sidecar is unreachable")
        try:
            slots = await self._read_slots(session_id)
        except CacheClientError as exc:
            return self._unchecked(str(exc))
        records = [slot.record for slot in slots if slot.record is not None]
        if records and now - max(r[0] for r in records) <= self._idle:
            # Another replica wrote it lately: ours follows after a touch interval.
            first_seen = min(r[1] for r in records)
            self._remember(session_id, _Seen(last_call=now, first_seen=first_seen, written_at=now))
            return Verdict.ACTIVE
        if any(slot.read.outcome is Outcome.LOAD_NO_FILL for slot in slots):
            return self._unchecked("Memcached is unavailable or the lease wait timed out")
        self._expired[session_id] = now + self._touch
        return Verdict.EXPIRED

    async def _read_slots(self, session_id: str) -> list[_Slot]:
        """Both record slots of a session. A missing slot gets a cached "not found" under
        the lease its read took, so no other reader or writer waits for that lease."""
        keys = _slot_keys(session_id)
        reads = await asyncio.gather(*(self._cache.get(SESSIONS_NAMESPACE, k) for k in keys))
        slots = [_Slot(key, read) for key, read in zip(keys, reads, strict=True)]
        for slot in slots:
            if slot.read.outcome is Outcome.LOAD:
                with contextlib.suppress(CacheClientError):  # the lease expires by itself
                    await self._cache.fill(
                        SESSIONS_NAMESPACE, slot.key, slot.read.lease_token, None
                    )
        return slots

    def _unchecked(self, why: str) -> str:
        IDLE_UNCHECKED.inc()
        now = time.monotonic()
        if now - self._warned_at >= _WARN_INTERVAL_SECONDS:
            self._warned_at = now
            log.warning("session idle timeout not enforced: %s", why)
        return Verdict.UNCHECKED

    def _write_soon(self, session_id: str, seen: _Seen, now: float) -> None:
        if len(self._writes) >= _MAX_WRITES_IN_FLIGHT or not self._cache.reachable():
            return  # the next call of the session tries again
        seen.writing = True
        seen.written_at = now
        # A context of its own: the call's deadline (a context variable the cache client
        # reads) must not cut the write short, and the call never waits for it.
        task = asyncio.get_running_loop().create_task(
            self._write(session_id, seen), context=contextvars.Context()
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, session_id: str, seen: _Seen) -> None:
        try:
            keys = _slot_keys(session_id)
            reads = await asyncio.gather(*(self._cache.get(SESSIONS_NAMESPACE, k) for k in keys))
            slots = [_Slot(key, read) for key, read in zip(keys, reads, strict=True)]
            for slot in slots:
                if slot.record is not None:
                    seen.first_seen = min(seen.first_seen, slot.record[1])
            # Overwrite the older slot (or an empty one): the newest record stays readable
            # while this one is replaced, so no reader finds the session without a record.
            target = min(slots, key=lambda slot: -1.0 if slot.record is None else slot.record[0])
            for slot in slots:
                if slot is not target and slot.read.outcome is Outcome.LOAD:
                    # Both were empty (a new session): release the other lease at once.
                    await self._cache.fill(
                        SESSIONS_NAMESPACE, slot.key, slot.read.lease_token, None
                    )
            read = target.read
            if read.outcome is not Outcome.LOAD:
                # A record (or "expired") is there: a lease needs the key empty first.
                await self._cache.invalidate(SESSIONS_NAMESPACE, [target.key])
                read = await self._cache.get(SESSIONS_NAMESPACE, target.key)
            if read.outcome is Outcome.LOAD:
                value = encode_record(seen.last_call, seen.first_seen)
                await self._cache.fill(SESSIONS_NAMESPACE, target.key, read.lease_token, value)
                ACTIVITY_WRITES.labels("stored").inc()
            else:
                # Another replica's write got in between (HIT), or Memcached is down.
                ACTIVITY_WRITES.labels("skipped").inc()
        except CacheRejected as exc:
            ACTIVITY_WRITES.labels("rejected").inc()
            self._unchecked(f"the sidecar refused the sessions namespace ({exc})")
        except CacheClientError:
            # Tried again a touch interval later, like a success: a sidecar that is down
            # must not get one failing write per call.
            ACTIVITY_WRITES.labels("failed").inc()
        except Exception:  # a background task: never let it die silently
            ACTIVITY_WRITES.labels("failed").inc()
            log.exception("writing the activity of a session failed")
        finally:
            seen.writing = False

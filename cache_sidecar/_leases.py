"""The read-through cache as callers see it: Get outcomes, lease waits, fills, invalidation.

This module is asyncio and knows nothing about gRPC; the blocking Memcached work is in
_store.py and runs in a bounded thread pool so the event loop never blocks.

Waiting for another caller's fill. A Get that finds someone else's lease waits at most
the namespace's ``lease_wait_seconds``, then answers LOAD_NO_FILL. Waiters of one key
in this process share a *flight*: one poller task reads Memcached with a short,
growing backoff (the lease holder may be another sidecar process), and everyone else
awaits a local future. A Fill handled by this process resolves the flight at once.

Why the future is swapped before every read: a result may only be handed to waiters
that registered *before* the read (or the fill's cas) started. Otherwise a waiter that
arrived just after an invalidation returned could receive a value read just before
it, which is exactly the stale read the lease protocol exists to prevent. So each
read takes the current ``flight.next`` future, installs a fresh one for later
arrivals, and resolves only the one it took.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import random
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from cache_sidecar._codec import encode_negative, encode_value
from cache_sidecar._errors import InvalidLeaseToken, UnknownNamespace, ValueTooLarge
from cache_sidecar._keylist import KeyPage, list_keys
from cache_sidecar._metrics import Counter, Counters
from cache_sidecar._policy import NamespacePolicy, Policy, WarmPolicy
from cache_sidecar._reads import ReadCounter
from cache_sidecar._store import (
    FillStatus,
    Location,
    Lookup,
    LookupStatus,
    Store,
    parse_lease_token,
)

__all__ = ["GetResult", "NoFillReason", "Outcome", "ReadCache", "WarmPlan"]

# Cross-process waiters poll: first after 2 ms (a fill usually follows a load of a few
# ms), then backing off to at most 25 ms so a long load costs ~40 reads per second.
_POLL_FIRST_SECONDS = 0.002
_POLL_MAX_SECONDS = 0.025
_POLL_GROWTH = 1.5

_T = TypeVar("_T")
_log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """What the caller of Get must do."""

    HIT = "hit"
    NEGATIVE_HIT = "negative_hit"
    LOAD = "load"
    LOAD_NO_FILL = "load_no_fill"


class NoFillReason(enum.Enum):
    """Why Get answered LOAD_NO_FILL."""

    UNAVAILABLE = "unavailable"
    LEASE_WAIT_TIMEOUT = "lease_wait_timeout"


@dataclass(frozen=True, slots=True)
class GetResult:
    """Answer of Get: the outcome, the value of a HIT, the lease token of a LOAD."""

    outcome: Outcome
    value: bytes = b""
    lease_token: str = ""
    no_fill_reason: NoFillReason | None = None


@dataclass(frozen=True, slots=True)
class WarmPlan:
    """What warming a namespace loads: its policy (None: none) and, for a most-read
    policy, the keys read most in its window, most read first."""

    policy: WarmPolicy | None
    keys: tuple[bytes, ...] = ()


class _Flight:
    """The waiters of one key in this process, and the future the next read resolves."""

    __slots__ = ("loop", "next", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.next: asyncio.Future[Lookup] = loop.create_future()
        self.waiters = 0

    def take(self) -> asyncio.Future[Lookup]:
        """Return the future for waiters registered so far; later ones get a new one."""
        taken, self.next = self.next, self.loop.create_future()
        return taken


_LEASED = Lookup(LookupStatus.LEASED)
_NEGATIVE = Lookup(LookupStatus.NEGATIVE)


class ReadCache:
    """Get / Fill / Invalidate over a Store, with policy, lease waits and counters."""

    def __init__(
        self,
        policy: Policy,
        store: Store,
        counters: Counters,
        executor: Executor,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._policy = policy
        self._store = store
        self._counters = counters
        self._executor = executor
        self._rng = rng or random.Random()
        self._flights: dict[tuple[str, bytes], _Flight] = {}
        self._pollers: set[asyncio.Task[None]] = set()
        # Reads counted for most-read warm policies; touched only on the event loop.
        self._reads = {
            ns.name: ReadCounter(ns.warm.most_read, ns.warm.window_seconds)
            for ns in policy.namespaces.values()
            if ns.warm is not None and ns.warm.most_read is not None
        }

    def namespace(self, name: str) -> NamespacePolicy:
        """Return a namespace's policy; raise UnknownNamespace when it is not configured."""
        policy = self._policy.get(name)
        if policy is None:
            raise UnknownNamespace(name)
        return policy

    async def get(
        self, namespace: str, key: bytes, *, wait_budget_seconds: float | None = None
    ) -> GetResult:
        """Read a key: a value, a negative entry, a lease to load, or "load, don't fill".

        A wait for another caller's fill lasts at most the namespace's
        lease_wait_seconds, and at most ``wait_budget_seconds`` (what is left of the
        caller's deadline) so the caller gets LOAD_NO_FILL rather than a timeout.
        """
        policy = self.namespace(namespace)
        reads = self._reads.get(namespace)
        if reads is not None:
            reads.record(key)
        max_wait = policy.lease_wait_seconds
        if wait_budget_seconds is not None:
            max_wait = max(0.0, min(max_wait, wait_budget_seconds))
        loc = self._store.locate(namespace, key)
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            lookup = await self._run(self._store.read, loc, policy.lease_ttl_seconds)
            if lookup.status is LookupStatus.LEASED:
                if deadline is None:
                    deadline = loop.time() + max_wait
                    self._counters.add(namespace, Counter.LEASE_WAITS)
                waited = await self._wait(namespace, key, loc, deadline)
                if waited is None:
                    self._counters.add(namespace, Counter.LEASE_WAIT_TIMEOUTS)
                    return self._no_fill(namespace, NoFillReason.LEASE_WAIT_TIMEOUT)
                if waited.status is LookupStatus.VACANT:
                    continue  # the lease ended without a value: compete for a new one
                lookup = waited
            return self._answer(namespace, lookup)

    def _answer(self, namespace: str, lookup: Lookup) -> GetResult:
        status = lookup.status
        if status is LookupStatus.HIT:
            self._counters.add(namespace, Counter.HITS)
            return GetResult(Outcome.HIT, value=lookup.value)
        if status is LookupStatus.NEGATIVE:
            self._counters.add(namespace, Counter.NEGATIVE_HITS)
            return GetResult(Outcome.NEGATIVE_HIT)
        if status is LookupStatus.GRANTED:
            for counter in (Counter.MISSES, Counter.LEASE_GRANTS, Counter.ORIGIN_LOADS):
                self._counters.add(namespace, counter)
            return GetResult(Outcome.LOAD, lease_token=lookup.token)
        return self._no_fill(namespace, NoFillReason.UNAVAILABLE)

    def _no_fill(self, namespace: str, reason: NoFillReason) -> GetResult:
        self._counters.add(namespace, Counter.MISSES)
        self._counters.add(namespace, Counter.ORIGIN_LOADS)
        return GetResult(Outcome.LOAD_NO_FILL, no_fill_reason=reason)

    async def _wait(
        self, namespace: str, key: bytes, loc: Location, deadline: float
    ) -> Lookup | None:
        """Wait for a read that starts after now to see something other than the lease.

        Returns None when the deadline passes first.
        """
        flight_key = (namespace, key)
        flight = self._flights.get(flight_key)
        if flight is None:
            flight = self._flights[flight_key] = _Flight(asyncio.get_running_loop())
            task = asyncio.create_task(self._poll(flight_key, flight, loc))
            self._pollers.add(task)
            task.add_done_callback(self._pollers.discard)
        flight.waiters += 1
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    # Shielded: one waiter timing out must not cancel the shared future.
                    lookup = await asyncio.shield(flight.next)
                    if lookup.status is not LookupStatus.LEASED:
                        return lookup
        except TimeoutError:
            return None
        finally:
            flight.waiters -= 1

    async def _poll(self, flight_key: tuple[str, bytes], flight: _Flight, loc: Location) -> None:
        delay = _POLL_FIRST_SECONDS
        try:
            while flight.waiters > 0:
                await asyncio.sleep(delay)
                delay = min(delay * _POLL_GROWTH, _POLL_MAX_SECONDS)
                if flight.waiters == 0:
                    break
                taken = flight.take()
                lookup = Lookup(LookupStatus.UNAVAILABLE)
                try:
                    lookup = await self._run(self._store.read, loc, None)
                except Exception:
                    # A bug, not an outage (those come back as UNAVAILABLE): the waiters
                    # degrade to LOAD_NO_FILL rather than hang until their deadline.
                    _log.exception("lease poller for %r failed", flight_key)
                    break
                finally:
                    taken.set_result(lookup)
        finally:
            # No await between the last waiters check and here: nobody can join a
            # flight that is being retired.
            if self._flights.get(flight_key) is flight:
                del self._flights[flight_key]
            if not flight.next.done():
                flight.next.set_result(Lookup(LookupStatus.UNAVAILABLE))

    async def fill(
        self, namespace: str, key: bytes, lease_token: str, value: bytes | None
    ) -> FillStatus:
        """Store what the origin returned (``None``: not found) if the lease still holds."""
        policy = self.namespace(namespace)
        if value is not None and len(value) > policy.max_value_bytes:
            raise ValueTooLarge(namespace, len(value), policy.max_value_bytes)
        parsed = parse_lease_token(lease_token)
        if parsed is None:
            raise InvalidLeaseToken()
        generation, nonce = parsed
        loc = self._store.locate(namespace, key)
        if value is None:
            expire = policy.negative_expire_seconds(self._rng)
            resolved = _NEGATIVE
        else:
            expire = policy.value_expire_seconds(self._rng)
            resolved = Lookup(LookupStatus.HIT, value=value)

        def encode_and_fill() -> FillStatus:
            # Compression runs here, in the I/O thread, not on the event loop.
            item = (
                encode_negative()
                if value is None
                else encode_value(value, policy.compress_threshold_bytes)
            )
            return self._store.fill(loc, generation, nonce, item, expire)

        # Waiters registered before the cas may be handed the value (see module doc).
        flight = self._flights.get((namespace, key))
        taken = flight.take() if flight is not None else None
        status = FillStatus.UNAVAILABLE
        try:
            status = await self._run(encode_and_fill)
        finally:
            if taken is not None:
                taken.set_result(resolved if status is FillStatus.STORED else _LEASED)
        if status is FillStatus.STORED:
            self._counters.add(namespace, Counter.FILLS_STORED)
        elif status is FillStatus.STALE:
            self._counters.add(namespace, Counter.STALE_SET_REJECTIONS)
        return status

    async def invalidate(self, namespace: str, keys: list[bytes]) -> int:
        """Invalidate keys; return the number of nodes quarantined instead of reached."""
        self.namespace(namespace)
        quarantined = await self._run(self._store.invalidate_keys, namespace, keys)
        self._counters.add(namespace, Counter.INVALIDATIONS_RPC, len(keys))
        return quarantined

    async def invalidate_namespace(self, namespace: str) -> int:
        """Invalidate a whole namespace; return the number of nodes quarantined instead."""
        self.namespace(namespace)
        quarantined = await self._run(self._store.invalidate_namespace, namespace)
        self._counters.add(namespace, Counter.INVALIDATIONS_NAMESPACE)
        return quarantined

    async def list_keys(self, namespace: str, page_size: int, page_token: str) -> KeyPage:
        """One page of the keys of the namespace's current generation (see _keylist)."""
        self.namespace(namespace)
        return await self._run(list_keys, self._store, namespace, page_size, page_token)

    def warm_plan(self, namespace: str) -> WarmPlan:
        """The namespace's warm policy and, for most-read, its most read keys now."""
        policy = self.namespace(namespace)
        reads = self._reads.get(namespace)
        keys = tuple(reads.top()) if reads is not None else ()
        return WarmPlan(policy.warm, keys)

    async def close(self) -> None:
        """Stop the pollers (their waiters are answered UNAVAILABLE)."""
        for task in list(self._pollers):
            task.cancel()
        await asyncio.gather(*self._pollers, return_exceptions=True)

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

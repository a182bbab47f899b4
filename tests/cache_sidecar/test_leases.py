"""Lease waits in one process, deterministically, over an in-memory stand-in for the store.

The race that matters: a result may only reach waiters that registered before the read
(or the fill) that produced it started. Gates in the fake store hold a read or fill open
while the test moves the world on (invalidation, new lease, new waiter).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cache_sidecar._codec import EntryKind, decode
from cache_sidecar._leases import GetResult, NoFillReason, Outcome, ReadCache
from cache_sidecar._metrics import Counter, Counters
from cache_sidecar._policy import parse_policy
from cache_sidecar._store import FillStatus, Location, Lookup, LookupStatus, parse_lease_token
from tests.cache_sidecar._support import run

POLICY = parse_policy(
    {"namespaces": {"ns": {"ttl_seconds": 60, "lease_ttl_seconds": 5, "lease_wait_seconds": 2}}}
)


class FakeStore:
    """One key's worth of Memcached semantics, with gates to freeze reads and fills."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entry: tuple[str, bytes] | None = None  # ("lease", nonce) or ("value", bytes)
        self.leases = 0
        self.peek_gate: threading.Event | None = None
        self.peek_started = threading.Event()
        self.fill_gate: threading.Event | None = None
        self.fill_done_in_store = threading.Event()

    def locate(self, namespace: str, key: bytes) -> Location:
        return Location(node=None, namespace=namespace, token=key.decode())  # type: ignore[arg-type]  # the fake has no nodes

    def read(self, loc: Location, lease_ttl_seconds: int | None) -> Lookup:
        with self.lock:
            entry = self.entry
            if entry is None and lease_ttl_seconds is not None:
                self.leases += 1
                nonce = b"%012d" % self.leases
                self.entry = ("lease", nonce)
                return Lookup(LookupStatus.GRANTED, token=f"1.{nonce.hex()}")
        if lease_ttl_seconds is None and self.peek_gate is not None:
            self.peek_started.set()  # the read happened; its answer is held back
            assert self.peek_gate.wait(5)
        if entry is None:
            return Lookup(LookupStatus.VACANT)
        if entry[0] == "value":
            return Lookup(LookupStatus.HIT, value=entry[1])
        return Lookup(LookupStatus.LEASED)

    def fill(
        self, loc: Location, generation: int, nonce: bytes, item: bytes, expire: int
    ) -> FillStatus:
        with self.lock:
            if self.entry != ("lease", nonce):
                return FillStatus.STALE
            entry = decode(item)
            assert entry.kind is EntryKind.VALUE
            self.entry = ("value", entry.payload)
        if self.fill_gate is not None:
            self.fill_done_in_store.set()  # stored; the reply is still on its way
            assert self.fill_gate.wait(5)
        return FillStatus.STORED

    def invalidate_keys(self, namespace: str, keys: list[bytes]) -> int:
        with self.lock:
            self.entry = None
        return 0

    def invalidate_namespace(self, namespace: str) -> int:
        return self.invalidate_keys(namespace, [])

    def set_value(self, value: bytes) -> None:
        """Another sidecar process filled the key (no local flight is told)."""
        with self.lock:
            self.entry = ("value", value)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


def make_cache(store: FakeStore, executor: ThreadPoolExecutor) -> tuple[ReadCache, Counters]:
    counters = Counters(POLICY.namespaces)
    fake: Any = store
    return ReadCache(POLICY, fake, counters, executor), counters


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (bounded)."""
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


async def wait_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 5)


def token_nonce(result: GetResult) -> bytes:
    parsed = parse_lease_token(result.lease_token)
    assert parsed is not None
    return parsed[1]


def test_a_fill_is_handed_only_to_waiters_that_registered_before_it(
    executor: ThreadPoolExecutor,
) -> None:
    store = FakeStore()
    cache, counters = make_cache(store, executor)

    async def scenario() -> None:
        holder = await cache.get("ns", b"k")
        assert holder.outcome is Outcome.LOAD
        early = asyncio.create_task(cache.get("ns", b"k"))
        await until(lambda: cache._flights.get(("ns", b"k")) is not None)

        store.fill_gate = threading.Event()
        filling = asyncio.create_task(cache.fill("ns", b"k", holder.lease_token, b"v1"))
        await wait_event(store.fill_done_in_store)
        # v1 is stored, but an update + invalidation completes before its reply lands.
        await cache.invalidate("ns", [b"k"])
        second_holder = await cache.get("ns", b"k")
        assert second_holder.outcome is Outcome.LOAD
        late = asyncio.create_task(cache.get("ns", b"k"))  # registers after the invalidation
        await until(lambda: counters.snapshot()["ns"][Counter.LEASE_WAITS] == 2)

        store.fill_gate.set()
        assert await filling is FillStatus.STORED
        assert (await early).value == b"v1"  # it started before the invalidation: fine
        assert not late.done()  # v1 must not reach it
        store.fill_gate = None
        await cache.fill("ns", b"k", second_holder.lease_token, b"v2")
        assert (await late).value == b"v2"

    run(scenario())


def test_a_poll_result_is_handed_only_to_waiters_that_registered_before_the_read(
    executor: ThreadPoolExecutor,
) -> None:
    store = FakeStore()
    cache, counters = make_cache(store, executor)

    async def scenario() -> None:
        await cache.get("ns", b"k")  # the lease holder is "another process": never fills here
        early = asyncio.create_task(cache.get("ns", b"k"))
        await until(lambda: counters.snapshot()["ns"][Counter.LEASE_WAITS] == 1)

        store.peek_gate = threading.Event()
        store.set_value(b"v1")  # filled through another sidecar
        await wait_event(store.peek_started)  # the poller has read v1...
        await cache.invalidate("ns", [b"k"])  # ...which is then invalidated
        second_holder = await cache.get("ns", b"k")
        late = asyncio.create_task(cache.get("ns", b"k"))
        await until(lambda: counters.snapshot()["ns"][Counter.LEASE_WAITS] == 2)

        store.peek_gate.set()
        assert (await early).value == b"v1"
        await asyncio.sleep(0.05)  # several poll rounds
        assert not late.done()
        store.peek_gate = None
        await cache.fill("ns", b"k", second_holder.lease_token, b"v2")
        assert (await late).value == b"v2"

    run(scenario())


def test_a_vanished_lease_lets_exactly_one_waiter_take_over(
    executor: ThreadPoolExecutor,
) -> None:
    store = FakeStore()
    cache, counters = make_cache(store, executor)

    async def scenario() -> None:
        holder = await cache.get("ns", b"k")
        waiters = [asyncio.create_task(cache.get("ns", b"k")) for _ in range(20)]
        await until(lambda: counters.snapshot()["ns"][Counter.LEASE_WAITS] == 20)
        await cache.invalidate("ns", [b"k"])  # the lease is gone, the holder's fill is void
        assert await cache.fill("ns", b"k", holder.lease_token, b"old") is FillStatus.STALE
        await until(lambda: sum(w.done() for w in waiters) == 1)
        (taker,) = [w.result() for w in waiters if w.done()]
        assert taker.outcome is Outcome.LOAD
        await cache.fill("ns", b"k", taker.lease_token, b"new")
        results = await asyncio.gather(*waiters)
        assert sorted(r.outcome.value for r in results) == ["hit"] * 19 + ["load"]
        assert {r.value for r in results if r.outcome is Outcome.HIT} == {b"new"}
        assert store.leases == 2

    run(scenario())


def test_waits_end_at_the_budget_with_load_no_fill(executor: ThreadPoolExecutor) -> None:
    store = FakeStore()
    cache, counters = make_cache(store, executor)

    async def scenario() -> None:
        await cache.get("ns", b"k")  # never filled
        started = time.monotonic()
        result = await cache.get("ns", b"k", wait_budget_seconds=0.1)
        assert time.monotonic() - started < 0.5
        assert result.outcome is Outcome.LOAD_NO_FILL
        assert result.no_fill_reason is NoFillReason.LEASE_WAIT_TIMEOUT
        snapshot = counters.snapshot()["ns"]
        assert snapshot[Counter.LEASE_WAIT_TIMEOUTS] == 1
        assert snapshot[Counter.ORIGIN_LOADS] == 2
        await cache.close()

    run(scenario())

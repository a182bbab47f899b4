"""The Memcached layer in-process, against a real memcached: generations, leases, quarantine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymemcache.client.base import Client

from cache_sidecar._breaker import BreakerSettings
from cache_sidecar._codec import encode_value
from cache_sidecar._keys import generation_key
from cache_sidecar._store import FillStatus, LookupStatus, Store, parse_lease_token
from devtools.memcached import Memcached
from devtools.ports import free_port

NS = "projects"


@pytest.fixture
def store(memcached: Memcached) -> Iterator[Store]:
    store = Store(
        [memcached.address],
        key_prefix="t",
        connect_timeout_seconds=0.05,
        timeout_seconds=0.1,
        breaker=BreakerSettings(failure_threshold=2, reset_timeout_seconds=0.05),
    )
    yield store
    store.close()


@pytest.fixture
def raw(memcached: Memcached) -> Iterator[Client]:
    client = Client(("127.0.0.1", memcached.port), default_noreply=False, timeout=1)
    yield client
    client.close()


def grant(store: Store, key: bytes) -> tuple[int, bytes]:
    lookup = store.read(store.locate(NS, key), lease_ttl_seconds=5)
    assert lookup.status is LookupStatus.GRANTED
    parsed = parse_lease_token(lookup.token)
    assert parsed is not None
    return parsed


def fill(store: Store, key: bytes, lease: tuple[int, bytes], value: bytes) -> FillStatus:
    generation, nonce = lease
    return store.fill(store.locate(NS, key), generation, nonce, encode_value(value, 1024), 60)


def test_lease_then_fill_then_hit_under_a_derived_key(store: Store, raw: Client) -> None:
    started_ns = time.time_ns()
    lease = grant(store, b"abc")
    assert lease[0] >= started_ns  # a fresh node starts its generation at time_ns()
    assert store.read(store.locate(NS, b"abc"), 5).status is LookupStatus.LEASED
    assert fill(store, b"abc", lease, b"value") is FillStatus.STORED
    hit = store.read(store.locate(NS, b"abc"), 5)
    assert (hit.status, hit.value) == (LookupStatus.HIT, b"value")
    assert raw.get(f"t:{NS}:{lease[0]}:abc") == b"Vvalue"


def test_fills_with_a_voided_lease_are_stale(store: Store, raw: Client) -> None:
    lease = grant(store, b"k1")
    store.invalidate_keys(NS, [b"k1"])
    assert fill(store, b"k1", lease, b"old") is FillStatus.STALE

    lease = grant(store, b"k2")
    store.invalidate_namespace(NS)
    assert fill(store, b"k2", lease, b"old") is FillStatus.STALE
    assert store.read(store.locate(NS, b"k2"), None).status is LookupStatus.VACANT

    lease = grant(store, b"k3")
    store.invalidate_keys(NS, [b"k3"])
    grant(store, b"k3")  # someone else's lease now sits there
    assert fill(store, b"k3", lease, b"old") is FillStatus.STALE


def test_a_lost_generation_counter_restarts_above_every_old_generation(
    store: Store, raw: Client
) -> None:
    old_generation, _ = grant(store, b"k")
    raw.delete(generation_key("t", NS))  # evicted, or the node was flushed
    new_generation, _ = grant(store, b"k")
    assert new_generation > old_generation
    # Namespace invalidation with the counter missing is a no-op, not an error.
    raw.delete(generation_key("t", NS))
    assert store.invalidate_namespace(NS) == 0


def test_undecodable_items_are_dropped(store: Store, raw: Client) -> None:
    generation, _ = grant(store, b"other")
    raw.set(f"t:{NS}:{generation}:junk", b"?not ours")
    assert store.read(store.locate(NS, b"junk"), None).status is LookupStatus.VACANT
    assert store.read(store.locate(NS, b"junk"), 5).status is LookupStatus.GRANTED


def test_quarantine_lasts_until_a_flush_that_started_after_the_last_miss(
    store: Store, raw: Client
) -> None:
    lease = grant(store, b"k")
    assert fill(store, b"k", lease, b"before") is FillStatus.STORED
    node = store.nodes[0]

    node.quarantine("test")
    assert store.read(store.locate(NS, b"k"), 5).status is LookupStatus.UNAVAILABLE
    assert store.invalidate_keys(NS, [b"k"]) == 1  # skipped: counted as quarantined
    assert not store.any_usable()

    epoch = node.quarantine_epoch()
    node.quarantine("a miss while a flush is in flight")
    assert not node.release(epoch)
    assert node.quarantined

    store.recover()
    assert not node.quarantined
    assert store.any_usable()
    # The flush dropped everything, so the value from before cannot come back.
    assert store.read(store.locate(NS, b"k"), 5).status is LookupStatus.GRANTED


def test_an_unreachable_node_opens_its_breaker_and_is_quarantined() -> None:
    store = Store(
        [f"127.0.0.1:{free_port()}"],  # nothing listens
        key_prefix="t",
        connect_timeout_seconds=0.05,
        timeout_seconds=0.1,
        breaker=BreakerSettings(failure_threshold=2, reset_timeout_seconds=60),
    )
    try:
        loc = store.locate(NS, b"k")
        assert store.read(loc, 5).status is LookupStatus.UNAVAILABLE
        assert not store.nodes[0].quarantined  # one failure: below the threshold
        assert store.read(loc, 5).status is LookupStatus.UNAVAILABLE
        assert store.nodes[0].quarantined
        assert store.fill(loc, 1, b"n" * 12, b"Vx", 60) is FillStatus.UNAVAILABLE
        assert store.invalidate_namespace(NS) == 1
        snapshot = store.snapshots()[0]
        assert (snapshot.reachable, snapshot.quarantined) == (False, True)
    finally:
        store.close()


def test_malformed_lease_tokens_are_refused() -> None:
    for token in [
        "",
        "1",
        "1.",
        ".ab",
        "x.00",
        "1." + "0" * 23,
        "1." + "g" * 24,
        "1" * 21 + "." + "0" * 24,
    ]:
        assert parse_lease_token(token) is None
    assert parse_lease_token("12." + "ab" * 12) == (12, bytes.fromhex("ab" * 12))


def test_memcached_with_udp_on_is_reported(store: Store, tmp_path: Path) -> None:
    assert store.unsafe_settings() == []  # the fixture's memcached: loopback, UDP off
    udp = Memcached(free_port(), tmp_path / "udp.log", udp_port=free_port())
    udp.start()
    unsafe = Store(
        [udp.address],
        key_prefix="t",
        connect_timeout_seconds=0.05,
        timeout_seconds=0.1,
        breaker=BreakerSettings(),
    )
    try:
        (warning,) = unsafe.unsafe_settings()
        assert "UDP on" in warning
    finally:
        unsafe.close()
        udp.stop()

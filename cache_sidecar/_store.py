"""Memcached access: generations, leases, fills, invalidation, quarantine. Blocking.

Everything here is synchronous pymemcache I/O and runs in the sidecar's bounded
thread pool (or the event consumer's thread), never on the event loop. Every call that
can fail waits for Memcached's reply (``default_noreply=False`` and explicit
``noreply=False``), has a connect and a read timeout, and goes through the node's
circuit breaker.

Entries are spread over nodes by rendezvous hashing of ``<namespace>:<token>``; every
node keeps its own generation counter per namespace, so a node failure never affects
keys on other nodes.

Lease protocol (one Memcached node, linearizable per key):

* read: ``get`` the generation (``add`` it as ``time_ns()`` when missing, so a fresh or
  flushed node can never reuse an old generation), ``get`` the entry; on a miss ``add``
  a lease placeholder carrying a random nonce with the lease TTL. The ``add`` succeeds
  for exactly one caller across all sidecar processes; it gets the token
  ``<generation>.<nonce>``.
* fill: the generation must still be the token's; then ``gets`` the entry and ``cas``
  the value over it only if it is still our placeholder. An invalidation in between
  deleted the placeholder (key) or moved the generation (namespace), so the fill is
  refused as stale instead of resurrecting an old value.

Failed invalidations quarantine the node instead (see _nodes.py): it is flushed before
it serves again, so an invalidation is never lost.
"""

from __future__ import annotations

import enum
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheServerError

from cache_sidecar._breaker import BreakerSettings, BreakerState
from cache_sidecar._codec import CodecError, EntryKind, decode, encode_lease
from cache_sidecar._keys import data_key, generation_key, key_token, token_budget
from cache_sidecar._metrics import NodeSnapshot
from cache_sidecar._nodes import Node, NodeDown, connector, guarded

__all__ = [
    "FillStatus",
    "Location",
    "Lookup",
    "LookupStatus",
    "Store",
    "parse_lease_token",
]

_log = logging.getLogger(__name__)

_NONCE_BYTES = 12
_TOKEN = re.compile(r"^([0-9]{1,20})\.([0-9a-f]{24})$")


class LookupStatus(enum.Enum):
    """What a read found."""

    HIT = "hit"
    NEGATIVE = "negative"
    GRANTED = "granted"
    """The caller now holds the lease (Lookup.token)."""
    LEASED = "leased"
    """Another caller holds the lease."""
    VACANT = "vacant"
    """Nothing there, not even a lease (only from reads that do not ask for one)."""
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Lookup:
    """Result of a read: status, the value of a HIT, the token of a GRANTED lease."""

    status: LookupStatus
    value: bytes = b""
    token: str = ""


class FillStatus(enum.Enum):
    """What a fill did."""

    STORED = "stored"
    STALE = "stale"
    UNAVAILABLE = "unavailable"


def parse_lease_token(token: str) -> tuple[int, bytes] | None:
    """Return (generation, nonce) of a lease token, or None when it is malformed."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    return int(match.group(1)), bytes.fromhex(match.group(2))


@dataclass(frozen=True, slots=True)
class Location:
    """Where a caller key lives: its node, namespace and Memcached-safe token."""

    node: Node
    namespace: str
    token: str


class Store:
    """Blocking operations on a set of Memcached nodes; safe to call from many threads."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        key_prefix: str,
        connect_timeout_seconds: float,
        timeout_seconds: float,
        breaker: BreakerSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not addresses:
            raise ValueError("at least one memcached address is required")
        self._prefix = key_prefix
        self.key_prefix = key_prefix
        """First segment of every Memcached key (the policy's key_prefix)."""
        self.connect_timeout_seconds = connect_timeout_seconds
        self.timeout_seconds = timeout_seconds

        # Connections per node are bounded by the threads that use them (the I/O pool,
        # the event consumer, recovery, metrics scrapes).
        self.nodes = [
            Node(
                address,
                connector(
                    address,
                    connect_timeout_seconds=connect_timeout_seconds,
                    timeout_seconds=timeout_seconds,
                ),
                breaker,
                clock,
            )
            for address in addresses
        ]
        self._by_address = {node.address: node for node in self.nodes}
        self._ring = RendezvousHash(nodes=[node.address for node in self.nodes])
        # Last generation seen per (node, namespace): a hint that saves a round trip, never
        # trusted without the confirming read (see _generation_and_item). Plain dict item
        # reads and writes are atomic under the GIL; a lost update only costs a round trip.
        self._generation_hints: dict[tuple[str, str], int] = {}

    # -- placement --------------------------------------------------------------------

    def locate(self, namespace: str, key: bytes) -> Location:
        """Return the node and token of a caller key. Pure CPU, no I/O."""
        token = key_token(key, token_budget(self._prefix, namespace))
        if len(self.nodes) == 1:
            return Location(self.nodes[0], namespace, token)
        address = self._ring.get_node(f"{namespace}:{token}")
        return Location(self._by_address[address], namespace, token)

    # -- reads and fills ---------------------------------------------------------------

    def read(self, loc: Location, lease_ttl_seconds: int | None) -> Lookup:
        """Read an entry; on a miss try to take the lease when ``lease_ttl_seconds`` is set."""
        node = loc.node
        if not node.available():
            return _UNAVAILABLE
        try:
            return guarded(node, lambda c: self._read(c, loc, lease_ttl_seconds))
        except NodeDown:
            return _UNAVAILABLE

    def _read(self, client: Any, loc: Location, lease_ttl_seconds: int | None) -> Lookup:
        generation, item = self._generation_and_item(client, loc)
        key = data_key(self._prefix, loc.namespace, generation, loc.token)
        if item is None:
            if lease_ttl_seconds is None:
                return _VACANT
            nonce = secrets.token_bytes(_NONCE_BYTES)
            lease = encode_lease(nonce)
            if client.add(key, lease, expire=lease_ttl_seconds, noreply=False):
                return Lookup(LookupStatus.GRANTED, token=f"{generation}.{nonce.hex()}")
            # Lost the race: someone else's lease (or a value) is there now.
            item = client.get(key)
            if item is None:
                return _LEASED  # and already gone again; the waiter re-reads
        try:
            entry = decode(item)
        except CodecError as exc:
            # Not ours (or damaged): drop it so the next reader can take a lease.
            _log.warning("dropping undecodable item %r: %s", key, exc)
            client.delete(key, noreply=False)
            return _LEASED if lease_ttl_seconds is not None else _VACANT
        if entry.kind is EntryKind.VALUE:
            return Lookup(LookupStatus.HIT, value=entry.payload)
        if entry.kind is EntryKind.NEGATIVE:
            return _NEGATIVE
        return _LEASED

    def fill(
        self, loc: Location, generation: int, nonce: bytes, item: bytes, expire_seconds: int
    ) -> FillStatus:
        """Replace our lease placeholder by ``item``, only if the lease is still valid."""
        node = loc.node
        if not node.available():
            return FillStatus.UNAVAILABLE
        try:
            return guarded(
                node, lambda c: self._fill(c, loc, generation, nonce, item, expire_seconds)
            )
        except NodeDown:
            return FillStatus.UNAVAILABLE

    def _fill(
        self,
        client: Any,
        loc: Location,
        generation: int,
        nonce: bytes,
        item: bytes,
        expire_seconds: int,
    ) -> FillStatus:
        # Read the generation after the caller's waiters registered (see _leases): if a
        # namespace invalidation returned before, this sees the new generation.
        if self._generation(client, loc.namespace) != generation:
            return FillStatus.STALE
        key = data_key(self._prefix, loc.namespace, generation, loc.token)
        current, cas_unique = client.gets(key)
        if current != encode_lease(nonce):
            return FillStatus.STALE  # deleted, expired, or another caller's lease now
        # cas fails if anything (a delete, a flush, a new lease) touched the key since gets.
        stored = client.cas(key, item, cas_unique, expire=expire_seconds, noreply=False)
        return FillStatus.STORED if stored else FillStatus.STALE

    # -- invalidation -----------------------------------------------------------------

    def invalidate_keys(self, namespace: str, keys: Sequence[bytes]) -> int:
        """Delete keys' entries (and leases) on their nodes; return how many nodes were
        quarantined instead because they could not be reached."""
        by_node: dict[str, list[str]] = {}
        for key in keys:
            loc = self.locate(namespace, key)
            by_node.setdefault(loc.node.address, []).append(loc.token)
        quarantined = 0
        for address, tokens in by_node.items():
            node = self._by_address[address]

            def delete(client: Any, tokens: list[str] = tokens) -> None:
                generation = self._generation(client, namespace)
                client.delete_many(
                    [data_key(self._prefix, namespace, generation, t) for t in tokens],
                    noreply=False,
                )

            if not self._invalidate_on(node, delete):
                quarantined += 1
        return quarantined

    def invalidate_namespace(self, namespace: str) -> int:
        """Move the namespace to a new generation on every node; return how many nodes
        were quarantined instead because they could not be reached."""
        key = generation_key(self._prefix, namespace)
        quarantined = 0
        for node in self.nodes:
            # incr answers None when the counter is missing: the next reader then starts
            # a fresh time-based generation, which orphans old entries just as well.
            if not self._invalidate_on(node, lambda c: c.incr(key, 1, noreply=False)):
                quarantined += 1
        return quarantined

    def _invalidate_on(self, node: Node, op: Callable[[Any], object]) -> bool:
        if node.quarantined or not node.breaker.allow():
            # The flush that ends the quarantine covers this invalidation, but only if
            # it starts after now: bump the epoch.
            node.quarantine("invalidation skipped while unavailable")
            return False
        try:
            guarded(node, op)
        except NodeDown:
            node.quarantine("invalidation failed")
            return False
        return True

    def generation_on(self, node: Node, namespace: str) -> int:
        """Return the namespace's current generation on ``node``; raise NodeDown."""
        return guarded(node, lambda c: self._generation(c, namespace))

    # -- recovery and stats ------------------------------------------------------------

    def any_usable(self) -> bool:
        """Return whether at least one node can serve requests."""
        return any(not n.quarantined and n.breaker.state is BreakerState.CLOSED for n in self.nodes)

    def needs_recovery(self) -> bool:
        """Return whether some node waits for a flush."""
        return any(node.quarantined for node in self.nodes)

    def recover(self) -> None:
        """Flush every quarantined node its breaker lets us try, lifting the quarantine."""
        for node in self.nodes:
            if not node.quarantined:
                continue
            epoch = node.quarantine_epoch()
            if not node.breaker.allow():
                continue
            try:
                guarded(node, lambda c: c.flush_all(delay=0, noreply=False))
            except NodeDown:
                continue
            node.release(epoch)

    def snapshots(self) -> list[NodeSnapshot]:
        """Return every node's state, with Memcached's own stats for healthy nodes."""
        result = []
        for node in self.nodes:
            stats: dict[bytes, Any] = {}
            # Only healthy nodes: a stats call must not use up a half-open trial.
            if not node.quarantined and node.breaker.state is BreakerState.CLOSED:
                try:
                    stats = guarded(node, lambda c: c.stats())
                except NodeDown:
                    stats = {}
            result.append(
                NodeSnapshot(
                    address=node.address,
                    breaker_state=node.breaker.state,
                    quarantined=node.quarantined,
                    breaker_transitions=node.breaker.transitions,
                    reachable=bool(stats),
                    bytes=int(stats.get(b"bytes", 0)),
                    curr_items=int(stats.get(b"curr_items", 0)),
                    evictions=int(stats.get(b"evictions", 0)),
                )
            )
        return result

    def unsafe_settings(self) -> list[str]:
        """Return a warning per reachable node not bound to loopback or with UDP on.

        Memcached has no authentication: it must listen on 127.0.0.1 only, and with UDP
        off (``-l 127.0.0.1 -U 0``), since UDP memcached is a classic DDoS amplifier.
        """
        warnings = []
        for node in self.nodes:
            try:
                settings = guarded(node, lambda c: c.stats("settings"))
            except NodeDown:
                continue  # unreachable now; nothing to say about it
            udp = settings.get(b"udpport", 0)
            interface = settings.get(b"inter", b"")
            if udp:
                warnings.append(f"memcached {node.address} has UDP on (port {udp}); use -U 0")
            if interface not in _LOOPBACK:
                warnings.append(
                    f"memcached {node.address} listens on {interface!r}, not loopback; "
                    "use -l 127.0.0.1"
                )
        return warnings

    def close(self) -> None:
        """Close every idle connection."""
        for node in self.nodes:
            node.drop_idle_connections()

    # -- helpers ----------------------------------------------------------------------

    def _generation_and_item(self, client: Any, loc: Location) -> tuple[int, bytes | None]:
        """The namespace's current generation on this node and the entry under it.

        One round trip on the hot path: the generation last seen on this node is only a
        hint for which data key to ask for; the generation itself is read in the same
        ``get_many``, and the entry counts only if that read confirms the hint. Both are
        read after this call began, so a namespace invalidation acknowledged before it is
        always seen (it moved the generation), exactly as with two round trips.
        """
        hint_key = (loc.node.address, loc.namespace)
        hint = self._generation_hints.get(hint_key)
        if hint is not None:
            gen_key = generation_key(self._prefix, loc.namespace)
            key = data_key(self._prefix, loc.namespace, hint, loc.token)
            found = client.get_many([gen_key, key])
            raw = found.get(gen_key)
            if raw is not None and int(raw) == hint:
                return hint, found.get(key)
        generation = self._generation(client, loc.namespace)
        self._generation_hints[hint_key] = generation
        return generation, client.get(data_key(self._prefix, loc.namespace, generation, loc.token))

    def _generation(self, client: Any, namespace: str) -> int:
        key = generation_key(self._prefix, namespace)
        for _ in range(3):
            raw = client.get(key)
            if raw is not None:
                return int(raw)
            # Missing on a fresh, restarted or flushed node (or evicted). time_ns() is
            # far above any generation this node had before (incr adds 1 per namespace
            # invalidation), so entries of an old generation can never come back.
            fresh = time.time_ns()
            if client.add(key, b"%d" % fresh, expire=0, noreply=False):
                return fresh
        raise MemcacheServerError(f"generation counter {key} keeps vanishing")


_LOOPBACK = frozenset({b"127.0.0.1", b"::1", b"localhost"})
_UNAVAILABLE = Lookup(LookupStatus.UNAVAILABLE)
_VACANT = Lookup(LookupStatus.VACANT)
_LEASED = Lookup(LookupStatus.LEASED)
_NEGATIVE = Lookup(LookupStatus.NEGATIVE)

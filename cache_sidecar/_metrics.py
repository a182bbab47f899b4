"""Counters per namespace and their Prometheus exposition.

The counters are plain integers owned by :class:`Counters`: the Stats RPC and the
Prometheus collector read the same numbers, so they can never disagree. Node state
(breaker, quarantine) and Memcached's own ``stats`` (bytes, curr_items, evictions) are
read from the store at scrape time by :class:`SidecarCollector`. Per-RPC counts and
latency histograms come from the shared ``core.rpc.ServiceInterceptor``.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from cache_sidecar._breaker import BreakerState

__all__ = [
    "Counter",
    "Counters",
    "Metrics",
    "NodeSnapshot",
    "SidecarCollector",
]


class Counter(enum.Enum):
    """A per-namespace counter; the value is its Prometheus name (``_total`` is added)."""

    HITS = "agentic_cache_hits"
    MISSES = "agentic_cache_misses"
    NEGATIVE_HITS = "agentic_cache_negative_hits"
    STALE_SET_REJECTIONS = "agentic_cache_stale_set_rejections"
    LEASE_GRANTS = "agentic_cache_lease_grants"
    LEASE_WAITS = "agentic_cache_lease_waits"
    LEASE_WAIT_TIMEOUTS = "agentic_cache_lease_wait_timeouts"
    ORIGIN_LOADS = "agentic_cache_origin_loads"
    FILLS_STORED = "agentic_cache_fills_stored"
    INVALIDATIONS_RPC = "agentic_cache_invalidations_rpc"
    INVALIDATIONS_EVENT = "agentic_cache_invalidations_event"
    INVALIDATIONS_NAMESPACE = "agentic_cache_invalidations_namespace"


_HELP = {
    Counter.HITS: "Gets answered HIT.",
    Counter.MISSES: "Gets answered LOAD or LOAD_NO_FILL.",
    Counter.NEGATIVE_HITS: "Gets answered NEGATIVE_HIT.",
    Counter.STALE_SET_REJECTIONS: "Fills dropped because their lease was voided or expired.",
    Counter.LEASE_GRANTS: "Leases granted (Gets answered LOAD).",
    Counter.LEASE_WAITS: "Gets that waited for another caller's fill.",
    Counter.LEASE_WAIT_TIMEOUTS: "Lease waits that timed out (answered LOAD_NO_FILL).",
    Counter.ORIGIN_LOADS: "Gets that told the caller to load from the origin.",
    Counter.FILLS_STORED: "Fills stored in Memcached.",
    Counter.INVALIDATIONS_RPC: "Keys invalidated through the Invalidate RPC.",
    Counter.INVALIDATIONS_EVENT: "Keys or namespaces invalidated by domain events.",
    Counter.INVALIDATIONS_NAMESPACE: "Namespace-wide invalidations (RPC or event).",
}

# Invalidations are also exposed as one metric with a `source` label, the usual
# Prometheus shape for "the same thing from different places".
_INVALIDATION_SOURCES = {
    Counter.INVALIDATIONS_RPC: "rpc",
    Counter.INVALIDATIONS_EVENT: "event",
    Counter.INVALIDATIONS_NAMESPACE: "namespace",
}


class Counters:
    """Thread-safe counters per namespace (the event consumer runs in its own thread)."""

    def __init__(self, namespaces: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[Counter, int]] = {
            ns: dict.fromkeys(Counter, 0) for ns in namespaces
        }
        self.events_applied = 0
        self.events_rejected = 0
        self.events_retried = 0

    def add(self, namespace: str, counter: Counter, amount: int = 1) -> None:
        """Add to one counter of a configured namespace."""
        with self._lock:
            self._values[namespace][counter] += amount

    def add_event(self, *, applied: int = 0, rejected: int = 0, retried: int = 0) -> None:
        """Count domain events by what happened to them."""
        with self._lock:
            self.events_applied += applied
            self.events_rejected += rejected
            self.events_retried += retried

    def snapshot(self) -> dict[str, dict[Counter, int]]:
        """Return a copy of every counter, by namespace."""
        with self._lock:
            return {ns: dict(values) for ns, values in self._values.items()}


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One Memcached node as this process sees it, plus its own stats when reachable."""

    address: str
    breaker_state: BreakerState
    quarantined: bool
    breaker_transitions: int
    reachable: bool
    bytes: int = 0
    curr_items: int = 0
    evictions: int = 0


class SidecarCollector(Collector):
    """Prometheus collector reading the counters and the nodes at scrape time."""

    def __init__(
        self,
        counters: Counters,
        nodes: Callable[[], list[NodeSnapshot]],
        events_connected: Callable[[], bool],
    ) -> None:
        self._counters = counters
        self._nodes = nodes
        self._events_connected = events_connected

    def describe(self) -> Iterable[Metric]:
        """Describe nothing, so registering does not scrape Memcached."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family; called by the Prometheus HTTP thread."""
        snapshot = self._counters.snapshot()
        for counter in Counter:
            family = CounterMetricFamily(counter.value, _HELP[counter], labels=["namespace"])
            for ns, values in snapshot.items():
                family.add_metric([ns], values[counter])
            yield family
        by_source = CounterMetricFamily(
            "agentic_cache_invalidations",
            "Invalidations by source (rpc: keys, event: keys or namespaces, namespace: whole).",
            labels=["namespace", "source"],
        )
        for ns, values in snapshot.items():
            for counter, source in _INVALIDATION_SOURCES.items():
                by_source.add_metric([ns, source], values[counter])
        yield by_source

        events = CounterMetricFamily(
            "agentic_cache_events", "Domain events by outcome.", labels=["outcome"]
        )
        events.add_metric(["applied"], self._counters.events_applied)
        events.add_metric(["rejected"], self._counters.events_rejected)
        events.add_metric(["retried"], self._counters.events_retried)
        yield events
        yield GaugeMetricFamily(
            "agentic_cache_events_connected",
            "1 while the domain-event consumer is connected to the broker.",
            value=1 if self._events_connected() else 0,
        )
        yield from self._node_families(self._nodes())

    @staticmethod
    def _node_families(nodes: list[NodeSnapshot]) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "agentic_cache_breaker_state",
            "Circuit breaker state per Memcached node (1 for the current state).",
            labels=["node", "state"],
        )
        transitions = CounterMetricFamily(
            "agentic_cache_breaker_transitions",
            "Circuit breaker state changes per Memcached node.",
            labels=["node"],
        )
        quarantined = GaugeMetricFamily(
            "agentic_cache_node_quarantined",
            "1 while a Memcached node must be flushed before it is used again.",
            labels=["node"],
        )
        up = GaugeMetricFamily(
            "agentic_memcached_up", "1 when Memcached stats could be read.", labels=["node"]
        )
        used = GaugeMetricFamily(
            "agentic_memcached_bytes", "Memcached 'bytes' stat.", labels=["node"]
        )
        items = GaugeMetricFamily(
            "agentic_memcached_curr_items", "Memcached 'curr_items' stat.", labels=["node"]
        )
        evictions = CounterMetricFamily(
            "agentic_memcached_evictions", "Memcached 'evictions' stat.", labels=["node"]
        )
        for node in nodes:
            for candidate in BreakerState:
                state.add_metric(
                    [node.address, candidate.value], 1 if node.breaker_state is candidate else 0
                )
            transitions.add_metric([node.address], node.breaker_transitions)
            quarantined.add_metric([node.address], 1 if node.quarantined else 0)
            up.add_metric([node.address], 1 if node.reachable else 0)
            if node.reachable:
                used.add_metric([node.address], node.bytes)
                items.add_metric([node.address], node.curr_items)
                evictions.add_metric([node.address], node.evictions)
        yield from (state, transitions, quarantined, up, used, items, evictions)


class _DefaultRegistry(Collector):
    """Re-exposes the process-wide registry, where the shared ServiceInterceptor keeps
    the per-RPC metrics (grpc_server_handling_seconds is the latency histogram)."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class Metrics:
    """The Prometheus registry one sidecar exposes."""

    def __init__(self, collector: SidecarCollector) -> None:
        # A registry per sidecar (tests run several in one process) that also shows the
        # process-wide one.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.registry.register(_DefaultRegistry())

"""CacheService servicer: call the ReadCache, map the result. Nothing more.

Request validation (protovalidate rules from the proto), error mapping and per-RPC
metrics happen once for every method in the shared ``core.rpc.ServiceInterceptor``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from agentic.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_sidecar._breaker import BreakerState
from cache_sidecar._keylist import KeyPage
from cache_sidecar._leases import GetResult, NoFillReason, Outcome, ReadCache, WarmPlan
from cache_sidecar._metrics import Counter, Counters, NodeSnapshot
from cache_sidecar._store import FillStatus

__all__ = ["CacheServicer"]

# A lease wait ends this share of the caller's remaining time before its deadline (and
# at least the minimum), so the LOAD_NO_FILL answer arrives before the caller gives up:
# a loopback round trip plus scheduling slack on a busy host.
_REPLY_MARGIN_FRACTION = 0.1
_REPLY_MARGIN_MIN_SECONDS = 0.01

_OUTCOMES = {
    Outcome.HIT: cache_pb2.OUTCOME_HIT,
    Outcome.NEGATIVE_HIT: cache_pb2.OUTCOME_NEGATIVE_HIT,
    Outcome.LOAD: cache_pb2.OUTCOME_LOAD,
    Outcome.LOAD_NO_FILL: cache_pb2.OUTCOME_LOAD_NO_FILL,
}
_NO_FILL_REASONS = {
    NoFillReason.UNAVAILABLE: cache_pb2.NO_FILL_REASON_UNAVAILABLE,
    NoFillReason.LEASE_WAIT_TIMEOUT: cache_pb2.NO_FILL_REASON_LEASE_WAIT_TIMEOUT,
}
_FILL_RESULTS = {
    FillStatus.STORED: cache_pb2.FILL_RESULT_STORED,
    FillStatus.STALE: cache_pb2.FILL_RESULT_STALE,
    FillStatus.UNAVAILABLE: cache_pb2.FILL_RESULT_UNAVAILABLE,
}
_BREAKER_STATES = {
    BreakerState.CLOSED: cache_pb2.BREAKER_STATE_CLOSED,
    BreakerState.OPEN: cache_pb2.BREAKER_STATE_OPEN,
    BreakerState.HALF_OPEN: cache_pb2.BREAKER_STATE_HALF_OPEN,
}


class CacheServicer(cache_pb2_grpc.CacheServiceServicer):
    """gRPC face of a ReadCache."""

    def __init__(
        self,
        cache: ReadCache,
        *,
        counters: Counters,
        nodes: Callable[[], list[NodeSnapshot]],
        events_connected: Callable[[], bool],
        executor: Executor,
    ) -> None:
        self._cache = cache
        self._counters = counters
        self._nodes = nodes
        self._events_connected = events_connected
        self._executor = executor

    async def Get(self, request: cache_pb2.GetRequest, context: Any) -> cache_pb2.GetResponse:
        """Read a key (see the proto)."""
        remaining = context.time_remaining()
        budget = None
        if remaining is not None:
            budget = remaining - max(_REPLY_MARGIN_MIN_SECONDS, remaining * _REPLY_MARGIN_FRACTION)
        result = await self._cache.get(request.namespace, request.key, wait_budget_seconds=budget)
        return _get_response(result)

    async def Fill(self, request: cache_pb2.FillRequest, context: Any) -> cache_pb2.FillResponse:
        """Store a loaded value under a lease (see the proto)."""
        value = None if request.WhichOneof("content") == "not_found" else request.value
        status = await self._cache.fill(request.namespace, request.key, request.lease_token, value)
        return cache_pb2.FillResponse(result=_FILL_RESULTS[status])

    async def Invalidate(
        self, request: cache_pb2.InvalidateRequest, context: Any
    ) -> cache_pb2.InvalidateResponse:
        """Invalidate keys (see the proto)."""
        quarantined = await self._cache.invalidate(request.namespace, list(request.keys))
        return cache_pb2.InvalidateResponse(quarantined_nodes=quarantined)

    async def InvalidateNamespace(
        self, request: cache_pb2.InvalidateNamespaceRequest, context: Any
    ) -> cache_pb2.InvalidateNamespaceResponse:
        """Invalidate a whole namespace (see the proto)."""
        quarantined = await self._cache.invalidate_namespace(request.namespace)
        return cache_pb2.InvalidateNamespaceResponse(quarantined_nodes=quarantined)

    async def Stats(self, request: cache_pb2.StatsRequest, context: Any) -> cache_pb2.StatsResponse:
        """Report counters and node states (see the proto)."""
        loop = asyncio.get_running_loop()
        # Node snapshots ask Memcached for its own stats: blocking, so off the loop.
        nodes = await loop.run_in_executor(self._executor, self._nodes)
        return _stats_response(self._counters, nodes, self._events_connected())

    async def ListKeys(
        self, request: cache_pb2.ListKeysRequest, context: Any
    ) -> cache_pb2.ListKeysResponse:
        """One page of a namespace's keys (see the proto)."""
        page = await self._cache.list_keys(request.namespace, request.page_size, request.page_token)
        return _list_keys_response(page)

    async def GetWarmPlan(
        self, request: cache_pb2.GetWarmPlanRequest, context: Any
    ) -> cache_pb2.GetWarmPlanResponse:
        """A namespace's warm policy and most-read keys (see the proto)."""
        return _warm_plan_response(self._cache.warm_plan(request.namespace))


def _list_keys_response(page: KeyPage) -> cache_pb2.ListKeysResponse:
    return cache_pb2.ListKeysResponse(
        keys=[
            cache_pb2.KeyInfo(
                key=k.key,
                hashed=k.hashed,
                node=k.node,
                size_bytes=k.size_bytes,
                expire_unix_seconds=k.expire_unix_seconds,
                last_access_unix_seconds=k.last_access_unix_seconds,
            )
            for k in page.keys
        ],
        next_page_token=page.next_page_token,
    )


def _warm_plan_response(plan: WarmPlan) -> cache_pb2.GetWarmPlanResponse:
    if plan.policy is None:
        return cache_pb2.GetWarmPlanResponse(mode=cache_pb2.WARM_MODE_NONE)
    if plan.policy.most_read is None:
        return cache_pb2.GetWarmPlanResponse(mode=cache_pb2.WARM_MODE_ALL)
    return cache_pb2.GetWarmPlanResponse(
        mode=cache_pb2.WARM_MODE_MOST_READ,
        keys=list(plan.keys),
        limit=plan.policy.most_read,
        window_seconds=plan.policy.window_seconds,
    )


def _get_response(result: GetResult) -> cache_pb2.GetResponse:
    response = cache_pb2.GetResponse(outcome=_OUTCOMES[result.outcome])
    if result.value:
        response.value = result.value
    if result.lease_token:
        response.lease_token = result.lease_token
    if result.no_fill_reason is not None:
        response.no_fill_reason = _NO_FILL_REASONS[result.no_fill_reason]
    return response


def _stats_response(
    counters: Counters, nodes: list[NodeSnapshot], events_connected: bool
) -> cache_pb2.StatsResponse:
    response = cache_pb2.StatsResponse(
        events_connected=events_connected, events_applied=counters.events_applied
    )
    for ns, values in sorted(counters.snapshot().items()):
        response.namespaces.append(
            cache_pb2.NamespaceStats(
                namespace=ns,
                hits=values[Counter.HITS],
                misses=values[Counter.MISSES],
                negative_hits=values[Counter.NEGATIVE_HITS],
                stale_set_rejections=values[Counter.STALE_SET_REJECTIONS],
                lease_grants=values[Counter.LEASE_GRANTS],
                lease_waits=values[Counter.LEASE_WAITS],
                lease_wait_timeouts=values[Counter.LEASE_WAIT_TIMEOUTS],
                origin_loads=values[Counter.ORIGIN_LOADS],
                fills_stored=values[Counter.FILLS_STORED],
                invalidations_rpc=values[Counter.INVALIDATIONS_RPC],
                invalidations_event=values[Counter.INVALIDATIONS_EVENT],
                invalidations_namespace=values[Counter.INVALIDATIONS_NAMESPACE],
            )
        )
    for node in nodes:
        response.nodes.append(
            cache_pb2.NodeStats(
                address=node.address,
                breaker_state=_BREAKER_STATES[node.breaker_state],
                quarantined=node.quarantined,
                breaker_transitions=node.breaker_transitions,
                bytes=node.bytes,
                curr_items=node.curr_items,
                evictions=node.evictions,
                reachable=node.reachable,
            )
        )
    return response

"""CacheClient calls end by the caller's deadline, not only by their own timeouts.

The API server passes ``deadline_remaining`` as ``caller_deadline``, so no cache call
outlives the RPC it serves: an RPC with 100 ms left must not wait a full cache timeout
for a hung sidecar. A real grpc.aio server on loopback stands in for that sidecar (its
Get and Invalidate sleep past every timeout here, or Invalidate fails UNAVAILABLE at once
so the client keeps retrying). A fake servicer is enough: what is under test is the
client's deadline arithmetic, over real gRPC sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import grpc
import pytest
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc

from core.cache import CacheClient, CacheUnavailable
from tests.cache_sidecar._support import run

OWN_TIMEOUT_SECONDS = 1.0
"""The client's own deadline of reads and, unless a test says otherwise, invalidations."""
HANG_SECONDS = 2.0
"""How long the fake sidecar takes to answer: past every deadline in this module."""
CALLER_LEFT_SECONDS = 0.1
"""What the caller's RPC has left in the bounded cases."""
# Bounded calls end at ~0.1 s; 0.5 s is slack for a loaded 2-core machine, and still
# half of the own timeout the call would have waited without the bound.
WELL_UNDER_SECONDS = 0.5
# A call whose caller has no time left must not even wait for a round trip.
AT_ONCE_SECONDS = 0.2

Deadline = Callable[[], float | None]


class HangingSidecar(cache_pb2_grpc.CacheServiceServicer):
    """Answers Get and Invalidate after HANG_SECONDS, or Invalidate with UNAVAILABLE."""

    def __init__(self, *, invalidate_unavailable: bool = False) -> None:
        self.calls: Counter[str] = Counter()
        self._invalidate_unavailable = invalidate_unavailable

    async def Get(self, request: cache_pb2.GetRequest, context: Any) -> cache_pb2.GetResponse:
        self.calls["Get"] += 1
        await asyncio.sleep(HANG_SECONDS)
        # A hit: if the client waited this long, read_through would return it, not the origin.
        return cache_pb2.GetResponse(outcome=cache_pb2.OUTCOME_HIT, value=b"from the cache")

    async def Invalidate(
        self, request: cache_pb2.InvalidateRequest, context: Any
    ) -> cache_pb2.InvalidateResponse:
        self.calls["Invalidate"] += 1
        if self._invalidate_unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "fake sidecar: try again")
        await asyncio.sleep(HANG_SECONDS)
        return cache_pb2.InvalidateResponse()

    async def Fill(self, request: cache_pb2.FillRequest, context: Any) -> cache_pb2.FillResponse:
        await _not_faked(context)

    async def InvalidateNamespace(
        self, request: cache_pb2.InvalidateNamespaceRequest, context: Any
    ) -> cache_pb2.InvalidateNamespaceResponse:
        await _not_faked(context)

    async def Stats(self, request: cache_pb2.StatsRequest, context: Any) -> cache_pb2.StatsResponse:
        await _not_faked(context)

    async def ListKeys(
        self, request: cache_pb2.ListKeysRequest, context: Any
    ) -> cache_pb2.ListKeysResponse:
        await _not_faked(context)

    async def GetWarmPlan(
        self, request: cache_pb2.GetWarmPlanRequest, context: Any
    ) -> cache_pb2.GetWarmPlanResponse:
        await _not_faked(context)


async def _not_faked(context: Any) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of this fake")
    raise AssertionError("context.abort returned")


@asynccontextmanager
async def serving(fake: HangingSidecar) -> AsyncIterator[grpc.aio.Channel]:
    """A loopback server running ``fake``, and a channel to it that is already connected."""
    server = grpc.aio.server()
    cache_pb2_grpc.add_CacheServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        # Connected before any clock starts: the timings below measure deadlines only.
        await asyncio.wait_for(channel.channel_ready(), 10)
        yield channel
    finally:
        await channel.close()
        await server.stop(0)


def counting_down(seconds: float) -> Deadline:
    """A caller deadline like ``deadline_remaining``: ``seconds`` from now, shrinking."""
    end = time.monotonic() + seconds
    return lambda: end - time.monotonic()


async def _origin() -> bytes:
    return b"from the origin"


def test_a_read_ends_by_the_callers_deadline_and_read_through_falls_back() -> None:
    async def scenario() -> None:
        fake = HangingSidecar()
        async with serving(fake) as channel:
            cache = CacheClient(
                channel,
                timeout_seconds=OWN_TIMEOUT_SECONDS,
                caller_deadline=lambda: CALLER_LEFT_SECONDS,
            )
            started = time.monotonic()
            with pytest.raises(CacheUnavailable) as caught:
                await cache.get("projects", b"k")
            took = time.monotonic() - started
            # DEADLINE_EXCEEDED, not UNAVAILABLE: the call reached a live server and was
            # cut short by the deadline.
            assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            assert took < WELL_UNDER_SECONDS, f"get took {took:.3f}s"

            started = time.monotonic()
            value = await cache.read_through("projects", b"k", _origin)
            took = time.monotonic() - started
            assert value == b"from the origin"
            assert took < WELL_UNDER_SECONDS, f"read_through took {took:.3f}s"
        assert fake.calls["Get"] == 2

    run(scenario())


@pytest.mark.parametrize(
    "caller_left", [None, 30.0], ids=["no-caller-deadline", "caller-deadline-later"]
)
def test_otherwise_the_clients_own_timeout_applies(caller_left: float | None) -> None:
    async def scenario() -> None:
        async with serving(HangingSidecar()) as channel:
            cache = CacheClient(
                channel, timeout_seconds=OWN_TIMEOUT_SECONDS, caller_deadline=lambda: caller_left
            )
            started = time.monotonic()
            with pytest.raises(CacheUnavailable) as caught:
                await cache.get("projects", b"k")
            took = time.monotonic() - started
            assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            # Not earlier than its own timeout (and not HANG_SECONDS: that would be a hit).
            assert took >= 0.9 * OWN_TIMEOUT_SECONDS, f"get gave up after {took:.3f}s"

    run(scenario())


@pytest.mark.parametrize(
    ("caller_deadline", "bounded"),
    [(lambda: CALLER_LEFT_SECONDS, True), (lambda: None, False)],
    ids=["caller-deadline", "no-caller-deadline"],
)
def test_an_invalidation_of_a_hung_sidecar_ends_by_the_earlier_deadline(
    caller_deadline: Deadline, bounded: bool
) -> None:
    async def scenario() -> None:
        async with serving(HangingSidecar()) as channel:
            cache = CacheClient(
                channel,
                timeout_seconds=OWN_TIMEOUT_SECONDS,
                invalidate_timeout_seconds=OWN_TIMEOUT_SECONDS,
                caller_deadline=caller_deadline,
            )
            started = time.monotonic()
            with pytest.raises(CacheUnavailable) as caught:
                await cache.invalidate("projects", [b"k"])
            took = time.monotonic() - started
            assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            if bounded:
                assert took < WELL_UNDER_SECONDS, f"invalidate took {took:.3f}s"
            else:
                assert took >= 0.9 * OWN_TIMEOUT_SECONDS, f"invalidate gave up after {took:.3f}s"

    run(scenario())


def test_invalidation_retries_stop_at_the_callers_deadline() -> None:
    # The sidecar fails UNAVAILABLE at once, a transient code: the client retries with
    # backoff, and the caller's deadline, not the 5 s own total, must end the retries.
    caller_left = 0.3
    own_total = 5.0

    async def scenario() -> None:
        fake = HangingSidecar(invalidate_unavailable=True)
        async with serving(fake) as channel:
            cache = CacheClient(
                channel,
                invalidate_timeout_seconds=own_total,
                caller_deadline=counting_down(caller_left),
            )
            started = time.monotonic()
            with pytest.raises(CacheUnavailable) as caught:
                await cache.invalidate("projects", [b"k"])
            took = time.monotonic() - started
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert fake.calls["Invalidate"] >= 2, "the transient failure was not retried"
        # The last backoff pause never crosses the deadline; the slack is for the machine.
        assert took < caller_left + 0.5, f"retried for {took:.3f}s"

    run(scenario())


def test_a_caller_deadline_already_passed_fails_at_once() -> None:
    async def scenario() -> None:
        fake = HangingSidecar()
        async with serving(fake) as channel:
            cache = CacheClient(
                channel,
                timeout_seconds=OWN_TIMEOUT_SECONDS,
                invalidate_timeout_seconds=OWN_TIMEOUT_SECONDS,
                caller_deadline=lambda: -1.0,
            )
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "get": lambda: cache.get("projects", b"k"),
                "invalidate": lambda: cache.invalidate("projects", [b"k"]),
            }
            for name, call in calls.items():
                started = time.monotonic()
                with pytest.raises(CacheUnavailable) as caught:
                    await call()
                took = time.monotonic() - started
                assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED, name
                assert took < AT_ONCE_SECONDS, f"{name} took {took:.3f}s"

            started = time.monotonic()
            assert await cache.read_through("projects", b"k", _origin) == b"from the origin"
            took = time.monotonic() - started
            assert took < AT_ONCE_SECONDS, f"read_through took {took:.3f}s"
            assert sum(fake.calls.values()) == 0, "a call nobody waits for must not be sent"

    run(scenario())

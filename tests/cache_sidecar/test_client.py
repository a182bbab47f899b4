"""The typed client: no grpc.RpcError escapes, and reads survive a missing sidecar."""

from __future__ import annotations

import time

import grpc
import pytest

import cache_sidecar
import core.cache
from core.cache import CacheClient, CacheRejected, CacheUnavailable
from devtools.memcached import Memcached
from devtools.ports import free_port
from tests.cache_sidecar._support import SidecarFactory, run


def test_an_unreachable_sidecar_is_cache_unavailable_and_reads_fall_back() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there

    async def scenario() -> None:
        async with CacheClient.connect(
            address, timeout_seconds=0.2, invalidate_timeout_seconds=0.3
        ) as cache:
            with pytest.raises(CacheUnavailable) as caught:
                await cache.get("projects", b"k")
            assert caught.value.code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )

            async def load() -> bytes:
                return b"from the origin"

            assert await cache.read_through("projects", b"k", load) == b"from the origin"

            started = time.monotonic()
            with pytest.raises(CacheUnavailable):
                await cache.invalidate("projects", [b"k"])  # retried, within its deadline
            assert time.monotonic() - started < 1.0

    run(scenario())


def test_rejections_carry_reason_and_fields_and_are_not_swallowed(
    memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    sidecar = sidecar_factory([memcached])

    async def scenario() -> None:
        async with CacheClient.connect(sidecar.address) as cache:
            with pytest.raises(CacheRejected) as caught:
                await cache.invalidate("unknown", [b"k"])
            assert caught.value.reason == "UNKNOWN_NAMESPACE"
            assert "namespace" in caught.value.violations

            async def load() -> bytes:
                return b"x" * 2000  # over the `small` namespace's 1024-byte cap

            # The value is served even though the cache refuses to keep it.
            assert await cache.read_through("small", b"big", load) == b"x" * 2000
            with pytest.raises(CacheRejected):
                await cache.read_through("unknown", b"k", load)

    run(scenario())


def test_public_surface_is_explicit() -> None:
    for module in (cache_sidecar, core.cache):
        public = {name for name in vars(module) if not name.startswith("_")}
        exported = set(module.__all__)
        assert exported <= public
        # Everything public that is defined in the module itself is exported.
        own = {
            name
            for name in public
            if getattr(getattr(module, name), "__module__", None) == module.__name__
        }
        assert own <= exported

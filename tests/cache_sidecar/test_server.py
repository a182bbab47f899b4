"""create_server() in-process: health follows Memcached, Get keeps answering."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cache_sidecar import Config, create_server
from core.cache import CacheClient, Outcome
from devtools.memcached import Memcached
from devtools.ports import free_port
from tests.cache_sidecar._support import run

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_tracks_memcached_while_get_answers_load_no_fill(
    tmp_path: Path, policy_file: Path
) -> None:
    memcached = Memcached(free_port(), tmp_path / "memcached.log")  # not started yet
    config = Config(
        listen_address=f"unix:{tmp_path / 'run' / 'cache.sock'}",
        memcached_servers=(memcached.address,),
        policy_file=policy_file,
        metrics_address="127.0.0.1:0",
        events_enabled=False,
        breaker_failure_threshold=1,
        breaker_reset_seconds=0.1,
    )

    async def scenario() -> None:
        sidecar, _ = create_server(config)
        await sidecar.start()
        try:
            async with grpc.aio.insecure_channel(sidecar.address) as channel:
                health = health_pb2_grpc.HealthStub(channel)

                async def status() -> int:
                    request = health_pb2.HealthCheckRequest(service="agentic.cache.v1.CacheService")
                    reply = await health.Check(request, timeout=2)
                    return int(reply.status)

                async def becomes(expected: int) -> None:
                    deadline = time.monotonic() + 5
                    while await status() != expected:
                        assert time.monotonic() < deadline, f"health never became {expected}"
                        await asyncio.sleep(0.02)

                async with CacheClient(channel) as cache:
                    read = await cache.get("projects", b"k")  # refused: the breaker opens
                    assert read.outcome is Outcome.LOAD_NO_FILL
                    await becomes(NOT_SERVING)
                    assert (await cache.get("projects", b"k")).outcome is Outcome.LOAD_NO_FILL

                    await asyncio.to_thread(memcached.start)
                    await becomes(SERVING)
                    assert (await cache.get("projects", b"k")).outcome is Outcome.LOAD
        finally:
            await sidecar.stop(1.0)
            memcached.stop()

    run(scenario())

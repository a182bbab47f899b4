"""The sidecar process over gRPC: the lease protocol, limits, errors, health, lifecycle."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from core.cache import CacheClient, CacheRejected, FillResult, Outcome
from tests._processes import Memcached, free_port, loopback_tcp, run_module, start_sidecar
from tests.cache_sidecar._support import TEST_POLICY, eventually, run


@dataclass
class Cluster:
    """One memcached and one sidecar shared by the tests of this module."""

    address: str
    memcached: Memcached


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("basic")
    policy = workdir / "policy.toml"
    policy.write_text(TEST_POLICY)
    node = Memcached(free_port(), workdir / "memcached.log")
    node.start()
    try:
        service = start_sidecar(workdir, [node], policy)
        try:
            yield Cluster(service.address, node)
        finally:
            code = service.stop()
            assert code == 0, service.log()
    finally:
        node.stop()


def unique(name: str) -> bytes:
    return f"{name}-{uuid.uuid4().hex[:8]}".encode()


ODD_KEYS = [
    b"with space",
    b"crlf\r\nset injected 0 0 1\r\nx",
    b"\x00\x01\x02control\x7f",
    b"k" * 10 * 1024,
    "ключ".encode(),
    b"#hash-lookalike",
    b"A" * 300,
]


def test_odd_keys_round_trip_and_stay_distinct(cluster: Cluster) -> None:
    async def scenario() -> None:
        suffix = uuid.uuid4().bytes
        keys = [key + suffix for key in ODD_KEYS] + [suffix.hex().encode()]
        async with CacheClient.connect(cluster.address) as cache:
            for i, key in enumerate(keys):
                read = await cache.get("projects", key)
                assert read.outcome is Outcome.LOAD, key[:40]
                stored = await cache.fill("projects", key, read.lease_token, b"value-%d" % i)
                assert stored is FillResult.STORED
            for i, key in enumerate(keys):
                read = await cache.get("projects", key)
                assert (read.outcome, read.value) == (Outcome.HIT, b"value-%d" % i)

    run(scenario())


def test_value_over_the_cap_is_invalid_argument_and_not_stored(cluster: Cluster) -> None:
    async def scenario() -> None:
        key = unique("big")
        async with CacheClient.connect(cluster.address) as cache:
            read = await cache.get("small", key)
            assert read.outcome is Outcome.LOAD
            with pytest.raises(CacheRejected) as caught:
                await cache.fill("small", key, read.lease_token, b"x" * 1025)
            assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.reason == "VALUE_TOO_LARGE"
            assert "1025 bytes" in caught.value.violations["value"]
            # Nothing stored: a reader still finds only the lease, and times out on it.
            again = await cache.get("small", key)
            assert again.outcome is Outcome.LOAD_NO_FILL
            # The lease survived the refused fill; a fitting value is accepted.
            assert await cache.fill("small", key, read.lease_token, b"x" * 1024) is (
                FillResult.STORED
            )
            assert (await cache.get("small", key)).value == b"x" * 1024

    run(scenario())


def test_not_found_is_cached_as_a_negative_entry(cluster: Cluster) -> None:
    async def scenario() -> None:
        key = unique("missing")
        loads = 0

        async def loader() -> bytes | None:
            nonlocal loads
            loads += 1
            return None

        async with CacheClient.connect(cluster.address) as cache:
            assert await cache.read_through("projects", key, loader) is None
            assert await cache.read_through("projects", key, loader) is None
            assert (await cache.get("projects", key)).outcome is Outcome.NEGATIVE_HIT
        assert loads == 1

    run(scenario())


def test_large_values_are_compressed_in_memcached(cluster: Cluster) -> None:
    async def scenario() -> None:
        key = unique("large")
        value = b"a compressible project description " * 5000  # ~180 KB
        async with CacheClient.connect(cluster.address) as cache:
            before = (await cache.stats()).nodes[0].bytes
            read = await cache.get("projects", key)
            assert await cache.fill("projects", key, read.lease_token, value) is FillResult.STORED
            after = (await cache.stats()).nodes[0].bytes
            assert (await cache.get("projects", key)).value == value
        assert after - before < len(value) // 10

    run(scenario())


def test_invalidation_voids_the_lease_so_the_late_fill_is_stale(cluster: Cluster) -> None:
    async def scenario() -> None:
        key = unique("raced")
        async with CacheClient.connect(cluster.address) as cache:
            stale_before = _ns_stats(await cache.stats(), "projects").stale_set_rejections
            read = await cache.get("projects", key)
            await cache.invalidate("projects", [key])
            assert await cache.fill("projects", key, read.lease_token, b"old") is FillResult.STALE
            again = await cache.get("projects", key)
            assert again.outcome is Outcome.LOAD  # a new lease, not the old value
            # The old token cannot fill over the new lease either.
            assert await cache.fill("projects", key, read.lease_token, b"old") is FillResult.STALE
            stats = _ns_stats(await cache.stats(), "projects")
            assert stats.stale_set_rejections == stale_before + 2

    run(scenario())


def test_namespace_invalidation_drops_every_key_and_voids_leases(cluster: Cluster) -> None:
    async def scenario() -> None:
        keys = [unique("page") for _ in range(3)]
        async with CacheClient.connect(cluster.address) as cache:
            for key in keys[:2]:
                read = await cache.get("project_lists", key)
                await cache.fill("project_lists", key, read.lease_token, b"page")
            pending = await cache.get("project_lists", keys[2])
            other = unique("other")
            read = await cache.get("projects", other)
            await cache.fill("projects", other, read.lease_token, b"kept")

            await cache.invalidate_namespace("project_lists")

            for key in keys[:2]:
                assert (await cache.get("project_lists", key)).outcome is Outcome.LOAD
            late = await cache.fill("project_lists", keys[2], pending.lease_token, b"old")
            assert late is FillResult.STALE
            assert (await cache.get("projects", other)).value == b"kept"

    run(scenario())


def test_lease_wait_is_bounded_by_policy_and_by_the_callers_deadline(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with CacheClient.connect(cluster.address, timeout_seconds=0.8) as cache:
            key = unique("held")
            assert (await cache.get("small", key)).outcome is Outcome.LOAD  # never filled
            started = time.monotonic()
            assert (await cache.get("small", key)).outcome is Outcome.LOAD_NO_FILL
            assert 0.19 <= time.monotonic() - started < 0.7  # small: lease_wait 0.2 s

            key = unique("held")
            assert (await cache.get("race", key)).outcome is Outcome.LOAD
            started = time.monotonic()
            # race waits up to 1 s, but the caller's 0.8 s deadline wins, with an answer
            # (the sidecar stops waiting 10% of the remaining time before the deadline).
            assert (await cache.get("race", key)).outcome is Outcome.LOAD_NO_FILL
            assert 0.5 < time.monotonic() - started < 0.8

    run(scenario())


BAD_REQUESTS = {
    "unknown namespace": (
        cache_pb2.GetRequest(namespace="nope", key=b"k"),
        "UNKNOWN_NAMESPACE",
        "namespace",
    ),
    "empty key": (cache_pb2.GetRequest(namespace="projects", key=b""), "INVALID_ARGUMENT", "key"),
    "key over 16 KiB": (
        cache_pb2.GetRequest(namespace="projects", key=b"k" * 16385),
        "INVALID_ARGUMENT",
        "key",
    ),
    "fill without content": (
        cache_pb2.FillRequest(namespace="projects", key=b"k", lease_token="1.2"),
        "INVALID_ARGUMENT",
        "content",
    ),
    "forged lease token": (
        cache_pb2.FillRequest(namespace="projects", key=b"k", lease_token="forged", value=b"v"),
        "INVALID_LEASE_TOKEN",
        "lease_token",
    ),
    "bad namespace name": (
        cache_pb2.InvalidateNamespaceRequest(namespace="Bad"),
        "INVALID_ARGUMENT",
        "namespace",
    ),
    "empty key in a list": (
        cache_pb2.InvalidateRequest(namespace="projects", keys=[b"a", b""]),
        "INVALID_ARGUMENT",
        "keys[1]",
    ),
}


@pytest.mark.parametrize(
    ("request_message", "reason", "field"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys()
)
def test_bad_requests_are_invalid_argument_with_details(
    cluster: Cluster, request_message: Any, reason: str, field: str
) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(cluster.address) as channel:
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            method = {
                cache_pb2.GetRequest: stub.Get,
                cache_pb2.FillRequest: stub.Fill,
                cache_pb2.InvalidateRequest: stub.Invalidate,
                cache_pb2.InvalidateNamespaceRequest: stub.InvalidateNamespace,
            }[type(request_message)]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await method(request_message, timeout=2)
            error = caught.value
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
            status = rpc_status.from_call(error)
            assert status is not None
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            assert status.details[0].Unpack(info)
            assert status.details[1].Unpack(bad)
            assert (info.domain, info.reason) == ("agentic.cache.v1", reason)
            assert field in [v.field for v in bad.field_violations]

    run(scenario())


def test_health_serving_and_reflection_lists_the_service(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(cluster.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "agentic.cache.v1.CacheService"):
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=2
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = reflection.ServerReflectionInfo(timeout=2)
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            reply = await call.read()
            await call.done_writing()
            names = {s.name for s in reply.list_services_response.service}
            assert {"agentic.cache.v1.CacheService", "grpc.health.v1.Health"} <= names

    run(scenario())


def test_sigterm_stops_gracefully(memcached: Memcached, tmp_path: Path, policy_file: Path) -> None:
    service = start_sidecar(tmp_path, [memcached], policy_file)
    try:

        async def in_flight() -> None:
            async with CacheClient.connect(service.address) as cache:
                key = unique("held")
                assert (await cache.get("race", key)).outcome is Outcome.LOAD
                waiting = asyncio.create_task(cache.get("race", key))  # waits on the lease

                async def waiting_in_sidecar() -> bool:
                    stats = await cache.stats()
                    return (
                        next(n for n in stats.namespaces if n.namespace == "race").lease_waits > 0
                    )

                await eventually(waiting_in_sidecar, within_seconds=5, message="the lease wait")
                service.process.terminate()
                # The waiter is answered within the 1 s grace rather than cut off.
                assert (await waiting).outcome is Outcome.LOAD_NO_FILL

        run(in_flight())
    finally:
        code = service.stop()
    assert code == 0, service.log()
    assert "stopping: NOT_SERVING" in service.log()


def test_a_bad_policy_refuses_to_start_naming_the_field(tmp_path: Path) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text('[namespaces.projects]\nttl_seconds = "soon"\n')
    env = {
        **os.environ,
        "AGENTIC_CACHE_POLICY_FILE": str(policy),
        **loopback_tcp(),
        "AGENTIC_CACHE_METRICS_ADDRESS": "127.0.0.1:0",
        "AGENTIC_CACHE_EVENTS": "off",
    }
    result = run_module("cache_sidecar", env=env, timeout=30)
    assert result.returncode == 2
    assert "namespaces.projects.ttl_seconds" in result.stderr
    assert "refusing to start" in result.stderr


def _ns_stats(stats: cache_pb2.StatsResponse, namespace: str) -> cache_pb2.NamespaceStats:
    return next(ns for ns in stats.namespaces if ns.namespace == namespace)


@pytest.mark.parametrize(
    ("policy_text", "named"),
    [
        # A misspelt namespace: the API server's "projects" is then not configured.
        (
            "[namespaces.project]\n"
            '[namespaces.project_lists]\ninvalidate_namespace_on = ["project.*"]\n',
            "namespaces.projects",
        ),
        # A misspelt event pattern would never invalidate anything.
        (
            "[namespaces.projects]\n"
            'invalidate_keys_on = { "projet.*" = "project_id" }\n'
            "[namespaces.project_lists]\n",
            "'projet.*' matches no domain event",
        ),
        # The wrong key field: project events carry project_id.
        (
            "[namespaces.projects]\n"
            'invalidate_keys_on = { "project.updated" = "id" }\n'
            "[namespaces.project_lists]\n",
            "carries its key in 'project_id'",
        ),
    ],
)
def test_a_policy_that_breaks_the_contract_refuses_to_start(
    tmp_path: Path, policy_text: str, named: str
) -> None:
    policy = tmp_path / "typo.toml"
    # The namespaces the cases do not break are configured as they should be.
    artifacts = (
        '[namespaces.artifacts]\ninvalidate_keys_on = { "artifact.*" = "artifact_id" }\n'
        '[namespaces.rule_sets]\ninvalidate_keys_on = { "rule_set.*" = "rule_set_id" }\n'
    )
    policy.write_text("[defaults]\nttl_seconds = 60\n" + artifacts + policy_text)
    env = {
        **os.environ,
        "AGENTIC_CACHE_POLICY_FILE": str(policy),
        **loopback_tcp(),
        "AGENTIC_CACHE_METRICS_ADDRESS": "",
        "AGENTIC_CACHE_EVENTS": "off",
    }
    result = run_module("cache_sidecar", env=env, timeout=30)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "refusing to start" in result.stderr

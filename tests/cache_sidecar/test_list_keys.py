"""ListKeys and GetWarmPlan of a real sidecar process over two real memcached servers.

The reference is what the test itself stored: the caller keys it filled, and for keys
the sidecar must hash, the digest computed here from the documented rule ("#" + url-safe
base64 of SHA-256, unpadded).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc

from core.cache import CacheClient, FillResult, Outcome
from tests._processes import Memcached, free_port, start_sidecar
from tests._status import rich_status
from tests.cache_sidecar._support import TEST_POLICY, run

POLICY = (
    TEST_POLICY
    + """
[namespaces.hot]
warm = { most_read = 3, window_seconds = 3600 }

[namespaces.every]
warm = "all"
"""
)
TIMEOUT = 10.0


@dataclass
class Cluster:
    """Two memcached nodes behind one sidecar."""

    address: str
    nodes: list[Memcached]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("list-keys")
    policy = workdir / "policy.toml"
    policy.write_text(POLICY)
    nodes = [Memcached(free_port(), workdir / f"memcached-{i}.log") for i in range(2)]
    for node in nodes:
        node.start()
    try:
        service = start_sidecar(workdir, nodes, policy)
        try:
            yield Cluster(service.address, nodes)
        finally:
            assert service.stop() == 0, service.log()
    finally:
        for node in nodes:
            node.stop()


def digest_token(key: bytes) -> bytes:
    return b"#" + base64.urlsafe_b64encode(hashlib.sha256(key).digest()).rstrip(b"=")


async def put(client: CacheClient, namespace: str, key: bytes) -> None:
    read = await client.get(namespace, key)
    assert read.outcome is Outcome.LOAD, read
    assert await client.fill(namespace, key, read.lease_token, b"v:" + key) is FillResult.STORED


def list_all(
    stub: cache_pb2_grpc.CacheServiceStub, namespace: str, page_size: int
) -> list[list[cache_pb2.KeyInfo]]:
    pages: list[list[cache_pb2.KeyInfo]] = []
    token = ""
    for _ in range(1000):  # bounded: far more pages than the test stores keys
        response = stub.ListKeys(
            cache_pb2.ListKeysRequest(namespace=namespace, page_size=page_size, page_token=token),
            timeout=TIMEOUT,
        )
        pages.append(list(response.keys))
        token = response.next_page_token
        if not token:
            return pages
    raise AssertionError("ListKeys never returned a last page")


def test_list_keys_pages_through_exactly_the_current_generation(cluster: Cluster) -> None:
    namespace = "projects"
    raw = [f"p-{uuid.uuid4().hex[:12]}".encode() for _ in range(23)]
    odd = [b"has space " + uuid.uuid4().hex.encode(), b"x" * 400 + uuid.uuid4().hex.encode()]
    other = [f"a-{uuid.uuid4().hex[:12]}".encode() for _ in range(3)]

    async def fill() -> None:
        async with CacheClient.connect(cluster.address, timeout_seconds=5.0) as client:
            # A generation of the past: cleared below, so it must never be listed.
            await put(client, namespace, b"before-clear")
            await client.invalidate_namespace(namespace)
            for key in raw + odd:
                await put(client, namespace, key)
            for key in other:
                await put(client, "artifacts", key)

    run(fill())
    expected = {(key, False) for key in raw} | {(digest_token(k), True) for k in odd}
    addresses = [node.address for node in cluster.nodes]
    with grpc.insecure_channel(cluster.address) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        pages = list_all(stub, namespace, page_size=7)
        listed = [info for page in pages for info in page]
        assert all(len(page) <= 7 for page in pages)
        assert len(pages) >= 4  # 25 keys at 7 a page
        assert {(info.key, info.hashed) for info in listed} == expected
        assert len(listed) == len(expected)  # no key twice across pages
        # Ordered by node (configuration order), then by key; both nodes hold some.
        order = [(addresses.index(info.node), info.key) for info in listed]
        assert order == sorted(order)
        assert {info.node for info in listed} == set(addresses)
        for info in listed:
            assert info.size_bytes > len(info.key)
            assert info.expire_unix_seconds > info.last_access_unix_seconds > 0

        # One page of everything agrees with the paged listing.
        (whole,) = list_all(stub, namespace, page_size=1000)
        assert [(i.key, i.node) for i in whole] == [(i.key, i.node) for i in listed]

        # Clearing the namespace empties the listing; new fills are listed alone.
        stub.InvalidateNamespace(
            cache_pb2.InvalidateNamespaceRequest(namespace=namespace), timeout=TIMEOUT
        )
        assert list_all(stub, namespace, page_size=0) == [[]]
        fresh = [b"fresh-1", b"fresh-2"]

        async def refill() -> None:
            async with CacheClient.connect(cluster.address, timeout_seconds=5.0) as client:
                for key in fresh:
                    await put(client, namespace, key)

        run(refill())
        (after,) = list_all(stub, namespace, page_size=0)
        assert sorted(i.key for i in after) == fresh
        (artifacts,) = list_all(stub, "artifacts", page_size=0)
        assert {i.key for i in artifacts} >= set(other)


def test_list_keys_refuses_bad_tokens_sizes_and_namespaces(cluster: Cluster) -> None:
    with grpc.insecure_channel(cluster.address) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)

        async def fill() -> None:
            async with CacheClient.connect(cluster.address, timeout_seconds=5.0) as client:
                for i in range(3):
                    await put(client, "rule_sets", f"rs-{i}-{uuid.uuid4().hex[:6]}".encode())

        run(fill())
        first = stub.ListKeys(
            cache_pb2.ListKeysRequest(namespace="rule_sets", page_size=1), timeout=TIMEOUT
        )
        assert first.next_page_token
        cases = [
            cache_pb2.ListKeysRequest(namespace="rule_sets", page_token="not a token!"),
            cache_pb2.ListKeysRequest(namespace="rule_sets", page_token="e30="),  # {}
            # A token of another namespace is not good for this one.
            cache_pb2.ListKeysRequest(namespace="artifacts", page_token=first.next_page_token),
        ]
        for request in cases:
            with pytest.raises(grpc.RpcError) as raised:
                stub.ListKeys(request, timeout=TIMEOUT)
            assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert rich_status(raised.value).violation_reasons == {
                "page_token": "INVALID_PAGE_TOKEN"
            }
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListKeys(cache_pb2.ListKeysRequest(namespace="nope"), timeout=TIMEOUT)
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert rich_status(raised.value).violation_reasons == {"namespace": "UNKNOWN_NAMESPACE"}
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListKeys(
                cache_pb2.ListKeysRequest(namespace="rule_sets", page_size=1001), timeout=TIMEOUT
            )
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "page_size" in rich_status(raised.value).violation_reasons


def test_warm_plan_names_the_policy_and_the_most_read_keys_first(cluster: Cluster) -> None:
    reads = {b"h-one": 1, b"h-five": 5, b"h-three": 3, b"h-two": 2}

    async def scenario() -> list[cache_pb2.GetWarmPlanResponse]:
        async with CacheClient.connect(cluster.address, timeout_seconds=5.0) as client:
            for key, times in reads.items():
                await put(client, "hot", key)  # a miss counts as a read too
                for _ in range(times - 1):
                    assert (await client.get("hot", key)).outcome is Outcome.HIT
            return [await client.warm_plan(ns) for ns in ("hot", "every", "artifacts")]

    hot, every, none = run(scenario())
    assert hot.mode == cache_pb2.WARM_MODE_MOST_READ
    assert list(hot.keys) == [b"h-five", b"h-three", b"h-two"]
    assert (hot.limit, hot.window_seconds) == (3, 3600)
    assert every.mode == cache_pb2.WARM_MODE_ALL
    assert not every.keys
    assert none.mode == cache_pb2.WARM_MODE_NONE
    with grpc.insecure_channel(cluster.address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            cache_pb2_grpc.CacheServiceStub(channel).GetWarmPlan(
                cache_pb2.GetWarmPlanRequest(namespace="nope"), timeout=TIMEOUT
            )
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT

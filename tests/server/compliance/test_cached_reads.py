"""GetRuleSet through a real cache sidecar on a real memcached (SQLite and PostgreSQL):
repeated reads are hits, an acknowledged update or delete is never followed by the old
version, and the rule_set.* domain event carries the invalidation to another host's
cache when the writer's own sidecar is gone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from agentic.compliance.v1 import rule_sets_pb2 as pb
from agentic.compliance.v1 import rule_sets_pb2_grpc
from google.protobuf import field_mask_pb2

from devtools.memcached import Memcached
from devtools.ports import free_port
from tests._identity import authorized_channel
from tests._processes import Service, loopback_tcp, start_service, start_sidecar
from tests._scrape import metric, metrics_text
from tests._support import wait_for
from tests.server.compliance.test_rule_sets_api import get
from tests.server.projects.test_cached_reads import POLICY
from tests.server.projects.test_event_invalidation import BROKER, names  # noqa: F401 - fixture
from tests.server.projects.test_event_invalidation import api as event_api

TIMEOUT = 10.0


@dataclass
class Stack:
    """memcached <- sidecar <- API server, each a real process on loopback."""

    memcached: Memcached
    sidecar: Service
    server: Service
    channel: grpc.Channel
    rule_sets: rule_sets_pb2_grpc.RuleSetServiceStub

    def origin_loads(self) -> float:
        port = self.server.ready["metrics_port"]
        text = metrics_text(port)
        return metric(text, "agentic_origin_loads_total", resource="rule_set")


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    memcached = Memcached(free_port(), tmp_path / "memcached.log")
    memcached.start()
    sidecar_port = free_port()
    sidecar = start_sidecar(
        tmp_path / "sidecar",
        [memcached],
        POLICY,
        loopback_tcp(sidecar_port),
    )
    server = start_service(
        "server",
        {
            "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
            "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
            "DATABASE_URL": database_url,
            "AGENTIC_CACHE_ADDRESS": f"127.0.0.1:{sidecar_port}",
            "AGENTIC_CACHE_TIMEOUT_SECONDS": "0.5",
            "AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS": "0.5",
            "AGENTIC_TASKS_ENABLED": "false",
            "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
        },
        tmp_path / "api",
    )
    channel = authorized_channel(server.address)
    try:
        yield Stack(
            memcached, sidecar, server, channel, rule_sets_pb2_grpc.RuleSetServiceStub(channel)
        )
    finally:
        channel.close()
        assert server.stop() == 0, server.log()
        sidecar.stop()
        memcached.stop()


def create(stub: rule_sets_pb2_grpc.RuleSetServiceStub) -> pb.RuleSet:
    request = pb.CreateRuleSetRequest(
        rule_set=pb.RuleSet(
            name=f"cached-{uuid.uuid4().hex[:8]}",
            processes=[pb.Process(id="SWE.1", name="Software Requirements Analysis")],
        )
    )
    created: pb.RuleSet = stub.CreateRuleSet(request, timeout=TIMEOUT).rule_set
    return created


def describe(
    stub: rule_sets_pb2_grpc.RuleSetServiceStub, rule_set_id: str, text: str
) -> pb.RuleSet:
    request = pb.UpdateRuleSetRequest(
        id=rule_set_id,
        rule_set=pb.RuleSet(description=text),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
    )
    updated: pb.RuleSet = stub.UpdateRuleSet(request, timeout=TIMEOUT).rule_set
    return updated


def test_repeated_reads_are_hits_and_built_in_sets_never_load(stack: Stack) -> None:
    created = create(stack.rule_sets)
    before = stack.origin_loads()
    for _ in range(20):
        assert get(stack.rule_sets, created.id) == created
    assert stack.origin_loads() - before == 1
    for _ in range(5):
        assert get(stack.rule_sets, "aspice-3.1").built_in
    assert stack.origin_loads() - before == 1


def test_every_read_after_an_acknowledged_update_sees_it(stack: Stack) -> None:
    created = create(stack.rule_sets)
    with ThreadPoolExecutor(4) as readers:
        for i in range(30):
            get(stack.rule_sets, created.id)  # the old version is cached now
            updated = describe(stack.rule_sets, created.id, f"v{i}")
            assert updated.version == str(i + 2)
            seen = list(readers.map(lambda _: get(stack.rule_sets, created.id), range(4)))
            assert seen == [updated] * 4, f"after update {i}"


def test_a_read_after_an_acknowledged_delete_is_not_found(stack: Stack) -> None:
    created = create(stack.rule_sets)
    assert get(stack.rule_sets, created.id) == created  # cached
    stack.rule_sets.DeleteRuleSet(pb.DeleteRuleSetRequest(id=created.id), timeout=TIMEOUT)
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as info:
            get(stack.rule_sets, created.id)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_event_invalidates_another_hosts_cache(
    tmp_path: Path,
    names: tuple[str, str],  # noqa: F811 - the fixture imported above
) -> None:
    # Server A's sidecar dies before A updates: only the rule_set.updated event (and the
    # shipped policy's "rule_set.*" = "rule_set_id" rule) can drop B's cached copy.
    exchange, queue = names
    events = {
        "AGENTIC_CACHE_EVENTS": "on",
        "AGENTIC_BROKER_URL": BROKER,
        "AGENTIC_CACHE_EVENTS_EXCHANGE": exchange,
        "AGENTIC_CACHE_EVENTS_QUEUE": queue,
    }
    memcached = Memcached(free_port(), tmp_path / "memcached.log")
    memcached.start()
    started: list[Service] = []
    try:
        ports = free_port(), free_port()
        for side, port in zip("ab", ports, strict=True):
            started.append(
                start_sidecar(
                    tmp_path / side,
                    [memcached],
                    POLICY,
                    {**events, **loopback_tcp(port)},
                )
            )
        db = tmp_path / "shared.db"
        server_a = event_api(tmp_path, "api-a", db, ports[0], exchange)
        started.append(server_a)
        server_b = event_api(tmp_path, "api-b", db, ports[1], exchange)
        started.append(server_b)
        with (
            authorized_channel(server_a.address) as ch_a,
            authorized_channel(server_b.address) as ch_b,
        ):
            a = rule_sets_pb2_grpc.RuleSetServiceStub(ch_a)
            b = rule_sets_pb2_grpc.RuleSetServiceStub(ch_b)
            created = create(a)
            assert get(b, created.id) == created  # now cached
            started[0].stop(sig=9)  # A's synchronous invalidation will fail
            updated = describe(a, created.id, "via the event")
            assert get(a, created.id) == updated  # A reads the database meanwhile
            wait_for(
                lambda: get(b, created.id) == updated,
                timeout=10,
                message="server B to stop serving the old rule set once the event is consumed",
            )
    finally:
        for service in reversed(started):
            service.stop()
        memcached.stop()

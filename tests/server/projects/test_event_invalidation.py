"""Domain events carry an invalidation that a write could not deliver synchronously:
server A's sidecar is down when A updates a project; server B, on another sidecar over
the same memcached, must stop serving the old value once the event is consumed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentic.projects.v1 import projects_pb2 as pb
from agentic.projects.v1 import projects_pb2_grpc
from google.protobuf import field_mask_pb2
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from devtools.memcached import Memcached
from devtools.ports import free_port
from tests._identity import authorized_channel
from tests._processes import Service, loopback_tcp, start_service, start_sidecar
from tests._support import wait_for
from tests.server.projects.test_cached_reads import POLICY

BROKER = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    """A unique exchange and queue on the shared broker, deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    exchange, queue = f"agentic.test.events.{tag}", f"agentic.test.cache.{tag}"
    yield exchange, queue
    with Connection(BROKER) as conn:
        channel = conn.default_channel
        Queue(queue).bind(channel).delete()
        Exchange(exchange, type="topic").bind(channel).delete()


def api(tmp: Path, name: str, db: Path, sidecar_port: int, exchange: str) -> Service:
    env = {
        "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_METRICS_ADDRESS": "",
        "DATABASE_URL": f"sqlite:///{db}",
        "AGENTIC_CACHE_ADDRESS": f"127.0.0.1:{sidecar_port}",
        "AGENTIC_CACHE_TIMEOUT_SECONDS": "0.5",
        "AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS": "0.3",
        "AGENTIC_BROKER_URL": BROKER,
        "AGENTIC_TASKS_ENABLED": "false",  # domain events only: no task traffic
        "AGENTIC_EVENTS_EXCHANGE": exchange,
        "AGENTIC_SHUTDOWN_GRACE_SECONDS": "1",
    }
    return start_service("server", env, tmp / name)


def test_event_reaches_the_other_hosts_cache_when_sync_invalidation_fails(
    tmp_path: Path, names: tuple[str, str]
) -> None:
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
        port_a, port_b = free_port(), free_port()
        sidecar_a = start_sidecar(
            tmp_path / "a",
            [memcached],
            POLICY,
            {**events, **loopback_tcp(port_a)},
        )
        started.append(sidecar_a)
        started.append(
            start_sidecar(
                tmp_path / "b",
                [memcached],
                POLICY,
                {**events, **loopback_tcp(port_b)},
            )
        )
        db = tmp_path / "shared.db"
        server_a = api(tmp_path, "api-a", db, port_a, exchange)
        started.append(server_a)
        server_b = api(tmp_path, "api-b", db, port_b, exchange)
        started.append(server_b)
        with (
            authorized_channel(server_a.address) as ch_a,
            authorized_channel(server_b.address) as ch_b,
        ):
            a = projects_pb2_grpc.ProjectServiceStub(ch_a)
            b = projects_pb2_grpc.ProjectServiceStub(ch_b)
            created = a.CreateProject(
                pb.CreateProjectRequest(project=pb.Project(name="evt", owner_id="alice")),
                timeout=10,
            ).project
            get = pb.GetProjectRequest(id=created.id)
            assert b.GetProject(get, timeout=10).project == created  # now cached

            sidecar_a.stop(sig=9)  # A's synchronous invalidation will fail
            updated = a.UpdateProject(
                pb.UpdateProjectRequest(
                    id=created.id,
                    project=pb.Project(description="via the event"),
                    update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                ),
                timeout=10,
            ).project
            assert a.GetProject(get, timeout=10).project == updated  # A reads the database
            wait_for(
                lambda: b.GetProject(get, timeout=10).project == updated,
                timeout=10,
                message="server B to stop serving the old value once the event is consumed",
            )
    finally:
        for service in reversed(started):
            service.stop()
        memcached.stop()

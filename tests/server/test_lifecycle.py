"""Process behaviour: metrics endpoint, graceful shutdown, configuration errors."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path

import grpc
import pytest
from agentic.projects.v1 import projects_pb2 as pb
from agentic.projects.v1 import projects_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests._identity import authorized_channel
from tests._processes import run_module, start_service
from tests._scrape import metric, metrics_text
from tests._support import wait_for
from tests.conftest import Api


def scrape(api: Api) -> str:
    port = api.service.ready["metrics_port"]
    return metrics_text(port)


def test_grpc_server_metrics_count_codes(api: Api) -> None:
    labels = {"grpc_service": "agentic.projects.v1.ProjectService", "grpc_method": "GetProject"}
    before = scrape(api)
    missing = pb.GetProjectRequest(id=str(uuid.uuid4()))
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            api.projects.GetProject(missing, timeout=5)
    with pytest.raises(grpc.RpcError):
        api.projects.GetProject(pb.GetProjectRequest(id="bad"), timeout=5)
    started = "grpc_server_started_total"
    handled = "grpc_server_handled_total"
    expected = {"NOT_FOUND": 3, "INVALID_ARGUMENT": 1}

    def deltas(after: str) -> dict[str, float]:
        return {
            code: metric(after, handled, grpc_code=code, **labels)
            - metric(before, handled, grpc_code=code, **labels)
            for code in expected
        }

    # The client has its status before the server's interceptor counts the call: wait for
    # the count rather than read it at once (it raced on a busy machine).
    wait_for(
        lambda: deltas(scrape(api)) == expected,
        timeout=5,
        message=f"handled counts {expected} (last: {deltas(scrape(api))})",
    )
    after = scrape(api)
    assert metric(after, started, **labels) - metric(before, started, **labels) == 4
    assert metric(after, "grpc_server_handling_seconds_count", **labels) >= 4


def test_sigterm_goes_not_serving_then_finishes_in_flight_and_exits_0(tmp_path: Path) -> None:
    env = {
        "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_METRICS_ADDRESS": "",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "AGENTIC_SHUTDOWN_GRACE_SECONDS": "5",
    }
    service = start_service("server", env, tmp_path)
    channel = authorized_channel(service.address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        statuses: list[int] = []
        stop_watching = threading.Event()

        def watch() -> None:
            try:
                for reply in health.Watch(health_pb2.HealthCheckRequest(), timeout=20):
                    statuses.append(reply.status)
                    if stop_watching.is_set():
                        return
            except grpc.RpcError:
                return  # the server went away: expected at the end

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        wait_for(
            lambda: health_pb2.HealthCheckResponse.SERVING in statuses,
            timeout=10,
            message="health Watch to report SERVING",
        )
        service.process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: health_pb2.HealthCheckResponse.NOT_SERVING in statuses,
            timeout=10,
            message="health to turn NOT_SERVING after SIGTERM",
        )
        stop_watching.set()
        assert service.process.wait(15) == 0, service.log()
        assert "shutting down" in service.log()
    finally:
        channel.close()
        service.stop()


def test_bad_configuration_refuses_to_start(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTIC_DB_POOL_SIZE": "lots"}
    out = run_module("server", env=env, timeout=30)
    assert out.returncode != 0
    assert "AGENTIC_DB_POOL_SIZE" in out.stderr


def test_stub_works_against_the_service_names_in_reflection(api: Api) -> None:
    stub = projects_pb2_grpc.ProjectServiceStub(api.channel)
    reply = stub.ListProjects(pb.ListProjectsRequest(page_size=1), timeout=5)
    assert len(reply.projects) <= 1


def test_oversize_request_is_resource_exhausted_and_server_stays_healthy(api: Api) -> None:
    huge = pb.CreateProjectRequest(
        project=pb.Project(name="big", owner_id="alice", description="x" * (5 * 1024 * 1024))
    )
    with pytest.raises(grpc.RpcError) as info:
        api.projects.CreateProject(huge, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    health = health_pb2_grpc.HealthStub(api.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

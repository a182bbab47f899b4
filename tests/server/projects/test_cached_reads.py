"""The API server reading through a real cache sidecar on a real memcached, and surviving
the loss of either: clients see no errors, only slower reads, and never an old value."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from agentic.projects.v1 import projects_pb2 as pb
from agentic.projects.v1 import projects_pb2_grpc
from google.protobuf import field_mask_pb2

from devtools.memcached import Memcached
from devtools.ports import free_port
from server.auth import Role
from tests._identity import authorized_channel
from tests._processes import Service, loopback_tcp, start_service, start_sidecar
from tests._scrape import metric, metrics_text
from tests._support import REPO, wait_for

POLICY = REPO / "cache_sidecar" / "namespaces.toml"  # the shipped policy: same namespaces
TIMEOUT = 10.0


@dataclass
class Stack:
    """memcached <- sidecar <- API server, each a real process on loopback."""

    tmp: Path
    memcached: Memcached
    sidecar_port: int
    sidecar: Service
    server: Service
    channel: grpc.Channel
    projects: projects_pb2_grpc.ProjectServiceStub

    def start_sidecar(self) -> None:
        env = loopback_tcp(self.sidecar_port)
        self.sidecar = start_sidecar(self.tmp / "sidecar", [self.memcached], POLICY, env)

    def origin_loads(self) -> float:
        port = self.server.ready["metrics_port"]
        text = metrics_text(port)
        return metric(text, "agentic_origin_loads_total", resource="project")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
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
            "DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
            "AGENTIC_CACHE_ADDRESS": f"127.0.0.1:{sidecar_port}",
            "AGENTIC_CACHE_TIMEOUT_SECONDS": "0.5",
            "AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS": "0.5",
            "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
        },
        tmp_path / "api",
    )
    channel = authorized_channel(server.address)
    stack = Stack(
        tmp_path,
        memcached,
        sidecar_port,
        sidecar,
        server,
        channel,
        projects_pb2_grpc.ProjectServiceStub(channel),
    )
    try:
        yield stack
    finally:
        channel.close()
        assert server.stop() == 0, server.log()
        stack.sidecar.stop()
        memcached.stop()


def create(stack: Stack, owner: str = "alice") -> pb.Project:
    request = pb.CreateProjectRequest(
        project=pb.Project(name=f"p-{uuid.uuid4().hex[:8]}", owner_id=owner)
    )
    project: pb.Project = stack.projects.CreateProject(request, timeout=TIMEOUT).project
    return project


def get(stack: Stack, project_id: str) -> pb.Project:
    project: pb.Project = stack.projects.GetProject(
        pb.GetProjectRequest(id=project_id), timeout=TIMEOUT
    ).project
    return project


def set_description(stack: Stack, project_id: str, text: str) -> pb.Project:
    request = pb.UpdateProjectRequest(
        id=project_id,
        project=pb.Project(description=text),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
    )
    project: pb.Project = stack.projects.UpdateProject(request, timeout=TIMEOUT).project
    return project


def test_repeated_reads_are_hits_that_never_touch_the_database(stack: Stack) -> None:
    project = create(stack)
    before = stack.origin_loads()
    for _ in range(20):
        assert get(stack, project.id) == project
    assert stack.origin_loads() - before == 1


def test_unknown_ids_are_cached_as_not_found(stack: Stack) -> None:
    missing = str(uuid.uuid4())
    before = stack.origin_loads()
    for _ in range(5):
        with pytest.raises(grpc.RpcError) as info:
            get(stack, missing)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert stack.origin_loads() - before == 1


def test_every_read_after_an_acknowledged_write_sees_it(stack: Stack) -> None:
    project = create(stack)
    for i in range(40):
        get(stack, project.id)  # make sure the old version is cached
        updated = set_description(stack, project.id, f"v{i}")
        assert get(stack, project.id) == updated


def test_list_pages_follow_creates_and_updates(stack: Stack) -> None:
    owner = f"lists-{uuid.uuid4().hex[:6]}"
    request = pb.ListProjectsRequest(owner_id=owner)
    made = []
    for i in range(5):
        made.append(create(stack, owner).id)
        listed = stack.projects.ListProjects(request, timeout=TIMEOUT).projects
        assert [p.id for p in listed] == made, f"after create {i}"
    set_description(stack, made[0], "changed")
    listed = stack.projects.ListProjects(request, timeout=TIMEOUT).projects
    assert listed[0].description == "changed"


def test_sidecar_killed_server_keeps_answering_and_never_serves_stale(stack: Stack) -> None:
    project = create(stack)
    get(stack, project.id)  # cached in memcached
    stack.sidecar.stop(sig=9)
    for _ in range(20):  # no errors, only database reads
        assert get(stack, project.id).id == project.id
    updated = set_description(stack, project.id, "written while the sidecar was down")
    assert get(stack, project.id) == updated
    # memcached still holds the old value; the restarted sidecar must not bring it back.
    stack.start_sidecar()
    wait_for(
        lambda: get(stack, project.id) == updated and _pending(stack) == 0,
        timeout=15,
        message="the server to redeliver its pending invalidation",
    )
    for _ in range(10):
        assert get(stack, project.id) == updated
    assert stack.origin_loads() > 0


def _pending(stack: Stack) -> float:
    port = stack.server.ready["metrics_port"]
    text = metrics_text(port)
    for line in text.splitlines():
        if line.startswith("agentic_cache_pending_invalidations "):
            return float(line.split()[1])
    return 0.0


def test_memcached_killed_mid_run_no_client_errors_and_no_old_values(stack: Stack) -> None:
    project = create(stack)
    errors: list[BaseException] = []
    stale: list[str] = []
    latest = {"description": ""}
    lock = threading.Lock()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with lock:
                floor = latest["description"]
            try:
                seen = get(stack, project.id).description
            except grpc.RpcError as exc:
                errors.append(exc)
                return
            if floor and seen < floor:  # versions are zero-padded: string order is age
                stale.append(f"read {seen!r} after {floor!r} was acknowledged")

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for i in range(60):
            if i == 20:
                stack.memcached.kill()
            if i == 40:
                stack.memcached.start()
            text = f"v{i:03d}"
            set_description(stack, project.id, text)
            with lock:
                latest["description"] = text
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors[:3]
    assert not stale, stale[:3]
    assert get(stack, project.id).description == "v059"


def test_cached_reads_are_checked_for_reach_like_database_reads(stack: Stack) -> None:
    """A project in the cache is served only to principals who reach it (issue #5)."""
    project = create(stack, owner="alice")
    assert get(stack, project.id) == project  # the Administrator warms the cache
    loads = stack.origin_loads()
    with (
        authorized_channel(stack.server.address, "alice", (Role.TECHNICAL_LEAD,)) as a,
        authorized_channel(stack.server.address, "mallory", (Role.TECHNICAL_LEAD,)) as m,
    ):
        alice = projects_pb2_grpc.ProjectServiceStub(a)
        mallory = projects_pb2_grpc.ProjectServiceStub(m)
        request = pb.GetProjectRequest(id=project.id)
        assert alice.GetProject(request, timeout=TIMEOUT).project == project
        with pytest.raises(grpc.RpcError) as refused:
            mallory.GetProject(request, timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert stack.origin_loads() == loads, "both reads should have been cache hits"

        # alice makes mallory a member: the write invalidates, and the new value admits her.
        members = pb.UpdateProjectRequest(
            id=project.id,
            project=pb.Project(member_ids=["mallory"]),
            update_mask=field_mask_pb2.FieldMask(paths=["member_ids"]),
        )
        alice.UpdateProject(members, timeout=TIMEOUT)
        assert list(mallory.GetProject(request, timeout=TIMEOUT).project.member_ids) == ["mallory"]
        # ...and taking it away is just as immediate, though the value is cached again.
        members.project.ClearField("member_ids")
        alice.UpdateProject(members, timeout=TIMEOUT)
        assert alice.GetProject(request, timeout=TIMEOUT).project.member_ids == []
        with pytest.raises(grpc.RpcError) as again:
            mallory.GetProject(request, timeout=TIMEOUT)
        assert again.value.code() == grpc.StatusCode.NOT_FOUND

"""Claim check end to end: a task references an artifact, the worker reads it from the store.

A real API server and a real worker process share a file object store and a database on
a private RabbitMQ vhost. The task's spec carries only the reference the server filled
in (object key, size, sha256), never bytes; the worker streams the object, verifies it,
and fails the task with a reason a user can act on when the stored bytes are damaged.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.rpc import error_details_pb2
from sqlalchemy import select

from core.db import TaskRow
from tests._identity import authorized_channel
from tests._status import rich_status
from tests.server.artifacts._bytestream import create_upload, upload
from tests.workers._damage import damage_object, object_file
from tests.workers._stack import TIMEOUT, Stack, private_vhost, stack, watch_to_end


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """One server and one worker sharing a store and a SQLite database; the server address."""
    workdir = tmp_path_factory.mktemp("verify")
    with (
        private_vhost() as broker,
        stack(workdir, broker, f"sqlite:///{workdir / 'tasks.db'}") as s,
    ):
        s.start_server()
        s.start_worker(concurrency=1)
        yield s, s.servers[0].address


@pytest.fixture
def stubs(
    pipeline: tuple[Stack, str],
) -> Iterator[tuple[tasks_pb2_grpc.TaskServiceStub, artifacts_pb2_grpc.ArtifactServiceStub, str]]:
    """Task and artifact stubs, and a fresh project's id."""
    _, address = pipeline
    channel = authorized_channel(address)
    try:
        project = projects_pb2_grpc.ProjectServiceStub(channel).CreateProject(
            ppb.CreateProjectRequest(project=ppb.Project(name=f"p-{uuid.uuid4().hex[:8]}")),
            timeout=TIMEOUT,
        )
        yield (
            tasks_pb2_grpc.TaskServiceStub(channel),
            artifacts_pb2_grpc.ArtifactServiceStub(channel),
            project.project.id,
        )
    finally:
        channel.close()


def _artifact(
    artifacts: artifacts_pb2_grpc.ArtifactServiceStub, project: str, path: Path, size: int
) -> apb.Artifact:
    with path.open("wb") as out:
        out.write(os.urandom(size))
    return upload(artifacts, project, path)


def _submit(tasks: tasks_pb2_grpc.TaskServiceStub, project: str, artifact_id: str) -> pb.Task:
    request = pb.SubmitVerifyArtifactRequest(
        request_id=str(uuid.uuid4()),
        project_id=project,
        verify_artifact=pb.VerifyArtifactSpec(artifact=apb.ArtifactRef(artifact_id=artifact_id)),
    )
    task: pb.Task = tasks.SubmitVerifyArtifact(request, timeout=TIMEOUT).task
    return task


def test_worker_reads_the_artifact_by_reference(
    pipeline: tuple[Stack, str],
    stubs: tuple[tasks_pb2_grpc.TaskServiceStub, artifacts_pb2_grpc.ArtifactServiceStub, str],
    tmp_path: Path,
) -> None:
    s, _ = pipeline
    tasks, artifacts, project = stubs
    source = tmp_path / "source.bin"
    artifact = _artifact(artifacts, project, source, 3 * 1024 * 1024 + 5)
    expected = hashlib.sha256(source.read_bytes()).hexdigest()

    task = _submit(tasks, project, artifact.id)
    ref = task.verify_artifact.artifact
    # The server filled in the claim check; the client sent the id only.
    assert ref.artifact_id == artifact.id
    assert ref.size_bytes == source.stat().st_size
    assert ref.sha256 == expected
    assert object_file(s, ref.object_key).is_file()
    # Only the reference travels: the stored spec is a few hundred bytes, not megabytes.
    with s.db().connect() as conn:
        spec = conn.execute(select(TaskRow.spec).where(TaskRow.id == task.id)).scalar_one()
    assert len(spec) < 1024

    events = watch_to_end(tasks, task.id)
    final = events[-1].task
    assert final.state == pb.TASK_STATE_SUCCEEDED, final
    assert final.verify_artifact_result.sha256 == expected
    assert final.verify_artifact_result.size_bytes == source.stat().st_size


def test_damaged_bytes_fail_the_task_with_a_reason(
    pipeline: tuple[Stack, str],
    stubs: tuple[tasks_pb2_grpc.TaskServiceStub, artifacts_pb2_grpc.ArtifactServiceStub, str],
    tmp_path: Path,
) -> None:
    s, _ = pipeline
    tasks, artifacts, project = stubs
    artifact = _artifact(artifacts, project, tmp_path / "source.bin", 64 * 1024)
    # Damaged before the submit: a worker may verify within milliseconds of it.
    key = damage_object(s, artifact.id, 1000)  # one flipped byte, as a bad disk would
    task = _submit(tasks, project, artifact.id)
    assert task.verify_artifact.artifact.object_key == key

    final = watch_to_end(tasks, task.id)[-1].task
    assert final.state == pb.TASK_STATE_FAILED, final
    info = error_details_pb2.ErrorInfo()
    assert final.error.details[0].Unpack(info)
    assert info.reason == "ARTIFACT_DAMAGED"
    assert "upload it again" in final.error.message


def test_submit_refuses_what_a_worker_could_not_use(
    stubs: tuple[tasks_pb2_grpc.TaskServiceStub, artifacts_pb2_grpc.ArtifactServiceStub, str],
    pipeline: tuple[Stack, str],
) -> None:
    tasks, artifacts, project = stubs
    unfinished = create_upload(artifacts, project, size=10)
    with pytest.raises(grpc.RpcError) as info:
        _submit(tasks, project, unfinished.artifact.id)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(info.value).reason == "ARTIFACT_NOT_READY"

    with pytest.raises(grpc.RpcError) as info:
        _submit(tasks, project, str(uuid.uuid4()))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # An artifact of another project than the task's.
    _, address = pipeline
    channel = authorized_channel(address)
    other = projects_pb2_grpc.ProjectServiceStub(channel).CreateProject(
        ppb.CreateProjectRequest(project=ppb.Project(name=f"o-{uuid.uuid4().hex[:8]}")),
        timeout=TIMEOUT,
    )
    channel.close()
    with pytest.raises(grpc.RpcError) as info:
        _submit(tasks, other.project.id, unfinished.artifact.id)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(info.value).reason == "ARTIFACT_IN_OTHER_PROJECT"

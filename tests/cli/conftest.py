"""One pipeline for the CLI tests: an API server (metrics on) and a worker on a private vhost."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import tasks_pb2_grpc

from tests._identity import authorized_channel, token
from tests.cli._cli import CliEnv
from tests.workers._stack import TIMEOUT, Stack, private_vhost, stack


@dataclass
class Pipeline:
    """The running stack, stubs to it as the test's Administrator, and a project of theirs."""

    stack: Stack
    channel: grpc.Channel
    tasks: tasks_pb2_grpc.TaskServiceStub
    artifacts: artifacts_pb2_grpc.ArtifactServiceStub
    project_id: str

    @property
    def address(self) -> str:
        return self.stack.servers[0].address

    @property
    def metrics_port(self) -> int:
        return int(self.stack.servers[0].ready["metrics_port"])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """One server and one worker (two pool processes) sharing SQLite and a file store."""
    workdir = tmp_path_factory.mktemp("cli")
    with (
        private_vhost() as broker,
        stack(workdir, broker, f"sqlite:///{workdir / 'tasks.db'}") as s,
    ):
        s.start_server(AGENTIC_METRICS_ADDRESS="127.0.0.1:0")
        s.start_worker(concurrency=2)
        channel = authorized_channel(s.servers[0].address)
        try:
            project = projects_pb2_grpc.ProjectServiceStub(channel).CreateProject(
                ppb.CreateProjectRequest(project=ppb.Project(name="cli-tests")), timeout=TIMEOUT
            )
            yield Pipeline(
                stack=s,
                channel=channel,
                tasks=tasks_pb2_grpc.TaskServiceStub(channel),
                artifacts=artifacts_pb2_grpc.ArtifactServiceStub(channel),
                project_id=project.project.id,
            )
        finally:
            channel.close()


@pytest.fixture
def cli(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> CliEnv:
    """The CLI's environment: the pipeline's server, the Administrator's token, a fresh cache."""
    return CliEnv(
        address=pipeline.address, token=token(), cache_dir=tmp_path_factory.mktemp("cache")
    )

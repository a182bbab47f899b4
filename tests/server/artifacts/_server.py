"""An API server on a file object store for the artifact tests, restartable in place."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests._identity import Role, authorized_channel
from tests._processes import Service, start_service

TIMEOUT = 30.0


@dataclass
class ArtifactServer:
    """One server process on a SQLite database and a file store, both under ``workdir``."""

    workdir: Path
    extra: dict[str, str] = field(default_factory=dict)
    service: Service | None = None
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def objects(self) -> Path:
        """The object store's directory."""
        return self.workdir / "objects"

    def start(self) -> None:
        """Start (or start again, on the same database and store)."""
        env = {
            "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
            "AGENTIC_METRICS_ADDRESS": "",
            "AGENTIC_CACHE_ADDRESS": "",
            "DATABASE_URL": f"sqlite:///{self.workdir / 'api.db'}",
            "AGENTIC_OBJECT_STORE_URL": self.objects.resolve().as_uri(),
            "AGENTIC_SHUTDOWN_GRACE_SECONDS": "1",
            **self.extra,
        }
        self.service = start_service("server", env, self.workdir / "server")

    def kill(self) -> None:
        """kill -9, as a crash."""
        assert self.service is not None
        self.service.process.kill()
        self.service.process.wait(10)

    def stop(self) -> None:
        """Close channels and stop the server."""
        for channel in self.channels:
            channel.close()
        if self.service is not None and self.service.process.poll() is None:
            self.service.stop()

    def stub(
        self, subject: str = "test-admin", roles: tuple[Role, ...] = (Role.ADMINISTRATOR,)
    ) -> artifacts_pb2_grpc.ArtifactServiceStub:
        """An ArtifactService stub for ``subject``."""
        assert self.service is not None
        channel = authorized_channel(self.service.address, subject, roles)
        self.channels.append(channel)
        return artifacts_pb2_grpc.ArtifactServiceStub(channel)

    def project(self, owner: str = "test-admin", members: tuple[str, ...] = ()) -> str:
        """A new project's id."""
        assert self.service is not None
        channel = authorized_channel(self.service.address)
        self.channels.append(channel)
        created = projects_pb2_grpc.ProjectServiceStub(channel).CreateProject(
            ppb.CreateProjectRequest(
                project=ppb.Project(
                    name=f"p-{len(self.channels)}-{id(self)}",
                    owner_id=owner,
                    member_ids=list(members),
                )
            ),
            timeout=TIMEOUT,
        )
        return str(created.project.id)


def error_metadata(error: grpc.RpcError) -> dict[str, str]:
    """The ErrorInfo metadata of a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return dict(info.metadata)
    return {}

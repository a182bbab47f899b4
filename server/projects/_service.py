"""ProjectService servicer: map protos to domain calls and back, nothing more.

Requests arrive already validated against their proto rules (see server.rpc); domain
errors are mapped to statuses by the interceptor. Database work runs in a bounded
thread pool so the event loop never blocks on I/O.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from agentic.projects.v1 import projects_pb2, projects_pb2_grpc
from google.protobuf import timestamp_pb2

from server.projects._store import Project, ProjectStore

T = TypeVar("T")


def to_proto(project: Project) -> projects_pb2.Project:
    """The wire form of a domain project."""
    create_time = timestamp_pb2.Timestamp()
    create_time.FromDatetime(project.create_time)
    update_time = timestamp_pb2.Timestamp()
    update_time.FromDatetime(project.update_time)
    return projects_pb2.Project(
        id=project.id,
        name=project.name,
        description=project.description,
        owner_id=project.owner_id,
        create_time=create_time,
        update_time=update_time,
        etag=project.etag,
    )


class ProjectService(projects_pb2_grpc.ProjectServiceServicer):
    """agentic.projects.v1.ProjectService over a ProjectStore."""

    def __init__(self, store: ProjectStore, executor: ThreadPoolExecutor) -> None:
        self._store = store
        self._executor = executor

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def CreateProject(
        self, request: projects_pb2.CreateProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.CreateProjectResponse:
        """Create a project from name, description and owner_id."""
        p = request.project
        project: Project = await self._run(
            self._store.create, name=p.name, description=p.description, owner_id=p.owner_id
        )
        return projects_pb2.CreateProjectResponse(project=to_proto(project))

    async def GetProject(
        self, request: projects_pb2.GetProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.GetProjectResponse:
        """Return one project."""
        project: Project = await self._run(self._store.get, request.id)
        return projects_pb2.GetProjectResponse(project=to_proto(project))

    async def ListProjects(
        self, request: projects_pb2.ListProjectsRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.ListProjectsResponse:
        """Return one page of projects."""
        page = await self._run(
            self._store.list,
            page_size=request.page_size,
            page_token=request.page_token,
            owner_id=request.owner_id,
        )
        return projects_pb2.ListProjectsResponse(
            projects=[to_proto(p) for p in page.projects], next_page_token=page.next_page_token
        )

    async def UpdateProject(
        self, request: projects_pb2.UpdateProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.UpdateProjectResponse:
        """Apply the masked fields, conditionally on the etag."""
        fields = {path: getattr(request.project, path) for path in request.update_mask.paths}
        project: Project = await self._run(
            self._store.update, request.id, fields, etag=request.etag
        )
        return projects_pb2.UpdateProjectResponse(project=to_proto(project))

    async def DeleteProject(
        self, request: projects_pb2.DeleteProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.DeleteProjectResponse:
        """Delete a project, conditionally on the etag."""
        await self._run(self._store.delete, request.id, etag=request.etag)
        return projects_pb2.DeleteProjectResponse()

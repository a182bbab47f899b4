"""ProjectService servicer: map protos to domain calls and back, nothing more.

Requests arrive already validated against their proto rules (see core.rpc); domain
errors are mapped to statuses by the interceptor.
"""

from __future__ import annotations

import grpc
from agentic.projects.v1 import projects_pb2, projects_pb2_grpc

from core.rpc import FieldViolation, InvalidArgument
from server.access import current_principal
from server.projects._facade import Projects


class ProjectService(projects_pb2_grpc.ProjectServiceServicer):
    """agentic.projects.v1.ProjectService over the Projects facade."""

    def __init__(self, projects: Projects) -> None:
        self._projects = projects

    async def CreateProject(
        self, request: projects_pb2.CreateProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.CreateProjectResponse:
        """Create a project from name, description, owner_id and member_ids."""
        p = request.project
        project = await self._projects.create(
            name=p.name,
            description=p.description,
            owner_id=p.owner_id,
            member_ids=list(p.member_ids),
            principal=current_principal(),
        )
        return projects_pb2.CreateProjectResponse(project=project)

    async def GetProject(
        self, request: projects_pb2.GetProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.GetProjectResponse:
        """Return one project."""
        project = await self._projects.get(request.id, current_principal())
        return projects_pb2.GetProjectResponse(project=project)

    async def ListProjects(
        self, request: projects_pb2.ListProjectsRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.ListProjectsResponse:
        """Return one page of projects."""
        return await self._projects.list(request, current_principal())

    async def UpdateProject(
        self, request: projects_pb2.UpdateProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.UpdateProjectResponse:
        """Apply the masked fields, conditionally on the etag."""
        paths = set(request.update_mask.paths)
        if "owner_id" in paths and not request.project.owner_id:
            raise InvalidArgument(
                [FieldViolation("project.owner_id", "must not be empty", "required")],
                domain="agentic.projects.v1",
            )
        fields = {path: getattr(request.project, path) for path in paths - {"member_ids"}}
        members = list(request.project.member_ids) if "member_ids" in paths else None
        project = await self._projects.update(
            request.id,
            fields,
            etag=request.etag,
            member_ids=members,
            principal=current_principal(),
        )
        return projects_pb2.UpdateProjectResponse(project=project)

    async def DeleteProject(
        self, request: projects_pb2.DeleteProjectRequest, context: grpc.aio.ServicerContext
    ) -> projects_pb2.DeleteProjectResponse:
        """Delete a project, conditionally on the etag."""
        await self._projects.delete(request.id, etag=request.etag, principal=current_principal())
        return projects_pb2.DeleteProjectResponse()

"""The wire form (protobuf) of domain projects."""

from __future__ import annotations

from agentic.projects.v1 import projects_pb2
from google.protobuf import timestamp_pb2

from server.projects._store import Project


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
        member_ids=project.member_ids,
    )

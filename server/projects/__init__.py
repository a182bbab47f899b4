"""Projects: storage, cached reads and invalidating writes, and the ProjectService servicer."""

from server.projects._facade import Projects
from server.projects._service import ProjectService
from server.projects._store import (
    Page,
    Project,
    ProjectStore,
    project_not_found,
    reach_condition,
)
from server.projects._wire import to_proto

__all__ = [
    "Page",
    "Project",
    "ProjectService",
    "ProjectStore",
    "Projects",
    "project_not_found",
    "reach_condition",
    "to_proto",
]

"""Projects: storage and the ProjectService servicer."""

from server.projects._service import ProjectService, to_proto
from server.projects._store import Page, Project, ProjectStore

__all__ = ["Page", "Project", "ProjectService", "ProjectStore", "to_proto"]

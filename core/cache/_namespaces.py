"""The cache namespaces the API server reads through, declared once.

The server names namespaces only through these members; the sidecar, when it starts,
refuses a policy that lacks one of them, so a misspelt namespace in the TOML stops the
sidecar with a message instead of surfacing as INTERNAL on the first read.
"""

from __future__ import annotations

import enum


class Namespace(enum.StrEnum):
    """A namespace of the sidecar's policy that the API server uses."""

    PROJECTS = "projects"
    """One serialized ``agentic.projects.v1.Project`` per project id."""
    PROJECT_LISTS = "project_lists"
    """Pages of ListProjects, per viewer and request."""
    ARTIFACTS = "artifacts"
    """One serialized ``agentic.artifacts.v1.Artifact`` per artifact id."""

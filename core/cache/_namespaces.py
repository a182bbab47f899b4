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
    RULE_SETS = "rule_sets"
    """One serialized ``agentic.compliance.v1.RuleSet`` per custom rule set id (built-in
    sets are served from the code's data and never cached). ListRuleSets is not cached:
    it is an operator's call, rare next to the reads of one set by id."""

"""The domain events there are: their routing keys and the field that names their object.

Declared once, here: writers build events from these members, and the cache sidecar
checks its policy's event patterns and key fields against them when it starts, so a typo
in either place stops a process with a message instead of silently never invalidating.
"""

from __future__ import annotations

import enum


class EventType(enum.StrEnum):
    """A domain event's type, which is also its AMQP routing key."""

    PROJECT_CREATED = "project.created"
    PROJECT_UPDATED = "project.updated"
    PROJECT_DELETED = "project.deleted"
    ARTIFACT_CREATED = "artifact.created"
    ARTIFACT_UPDATED = "artifact.updated"
    """Metadata or state changed (an upload finished, failed or was reset)."""
    ARTIFACT_DELETED = "artifact.deleted"
    RULE_SET_CREATED = "rule_set.created"
    RULE_SET_UPDATED = "rule_set.updated"
    RULE_SET_DELETED = "rule_set.deleted"
    SESSION_REVOCATION_CREATED = "session_revocation.created"
    """A session, or every session of a subject, was revoked (``server.sessions``); the key
    is the ``session_revocations`` row id. Every API server also reads the table itself, so
    no server depends on this event to refuse a revoked token."""

    @property
    def key_field(self) -> str:
        """The event field holding the id of the object that changed (``project_id``,
        ``rule_set_id``)."""
        return f"{self.value.split('.', 1)[0]}_id"

"""The object-level rules every resource shares: who owns what a caller creates, and who
the object checks act for.

Owner: the caller, unless an Administrator names someone else. Viewer: the caller's id,
or None for an Administrator, who reaches everything; each store turns a viewer into its
own reach condition (a project's owner or members; a task's owner or project).
"""

from __future__ import annotations

from core.rpc import PermissionDenied
from server.auth import Principal

__all__ = ["owner_for", "viewer_of"]


def owner_for(principal: Principal, requested: str, *, action: str, domain: str) -> str:
    """The owner of a new object: ``requested``, or ``principal`` itself when empty.

    Naming another owner is PERMISSION_DENIED unless ``principal`` is an Administrator;
    ``action`` completes the message ("create a project", "submit a task").
    """
    owner = requested or principal.subject
    if owner != principal.subject and not principal.is_administrator:
        raise PermissionDenied(
            f"only an Administrator may {action} for another owner",
            reason="OWNER_NOT_CALLER",
            domain=domain,
        )
    return owner


def viewer_of(principal: Principal) -> str | None:
    """The id object-level checks use: None for an Administrator, who reaches everything."""
    return None if principal.is_administrator else principal.subject

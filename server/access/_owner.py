"""Who owns what a caller creates: the caller, unless an Administrator names someone else."""

from __future__ import annotations

from server.auth import Principal
from server.rpc import PermissionDenied

__all__ = ["owner_for"]


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

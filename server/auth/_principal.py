"""Who is calling: the verified subject of a token and the roles it carries.

Roles arrive in the token's ``roles`` claim as a JSON list of strings. Only the four
values of ``Role`` mean anything; every other string is dropped so that a typo or a
role invented by another system can never grant access here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Role(enum.StrEnum):
    """The roles a token may grant (the strings are the wire values of the ``roles`` claim)."""

    ADMINISTRATOR = "administrator"
    PROJECT_MANAGER = "project_manager"
    TECHNICAL_LEAD = "technical_lead"
    SUPPORT_ENGINEER = "support_engineer"


_ROLES_BY_VALUE: dict[str, Role] = {role.value: role for role in Role}


def roles_from_claim(claim: list[str]) -> frozenset[Role]:
    """The known roles in a ``roles`` claim (the verifier refuses any other shape first);
    unknown strings grant nothing."""
    return frozenset(_ROLES_BY_VALUE[item] for item in claim if item in _ROLES_BY_VALUE)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``subject`` is the token's ``sub`` (used as owner id)."""

    subject: str
    roles: frozenset[Role]
    expires_at: float | None = field(default=None, compare=False)
    """The token's ``exp`` (Unix seconds); None for principals that come from no token."""
    session_id: str | None = field(default=None, compare=False)
    """The token's ``sid`` claim: the session this token belongs to; None for a
    session-less (service) token and for principals that come from no token."""
    issued_at: float | None = field(default=None, compare=False)
    """The token's ``iat`` (Unix seconds); None for principals that come from no token."""

    @property
    def is_administrator(self) -> bool:
        """Whether the caller holds the Administrator role."""
        return Role.ADMINISTRATOR in self.roles

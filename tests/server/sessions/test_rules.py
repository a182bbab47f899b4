"""The session rules without processes: which token a revocation covers, how long it is
kept, the maximum age, and who may go without a session."""

from __future__ import annotations

import asyncio

import pytest

from core.rpc import Unauthenticated
from server.auth import Principal, Role
from server.sessions import Revocation, RevocationList, SessionGuard

NOW = 1_800_000_000.0
MAX_AGE = 3600.0


def principal(
    subject: str = "alice",
    sid: str | None = "s-1",
    issued_at: float = NOW - 10,
    roles: frozenset[Role] = frozenset({Role.TECHNICAL_LEAD}),
) -> Principal:
    return Principal(
        subject, roles, expires_at=issued_at + 3600, session_id=sid, issued_at=issued_at
    )


def refusal(guard: SessionGuard, who: Principal) -> str:
    try:
        asyncio.run(guard.check(who))
    except Unauthenticated as error:
        return error.reason
    return "OK"


def guard_over(revocations: RevocationList, now: float = NOW) -> SessionGuard:
    return SessionGuard(
        revocations,
        tracker=None,
        max_age_seconds=MAX_AGE,
        sessionless_subjects=["agentic-beat"],
        sessionless_roles=[Role.SUPPORT_ENGINEER],
        clock=lambda: now,
    )


def test_a_logout_covers_that_session_of_that_subject_only() -> None:
    revocations = RevocationList()
    revocations.add(
        Revocation.new(
            subject="alice", session_id="s-1", now=NOW, forget_at=NOW + 60, revoked_by="alice"
        )
    )
    guard = guard_over(revocations)
    assert refusal(guard, principal()) == "SESSION_REVOKED"
    assert refusal(guard, principal(sid="s-2")) == "OK"
    assert refusal(guard, principal(subject="bob")) == "OK"  # a sid names no one else's session


def test_a_subject_revocation_covers_tokens_issued_before_its_cut_off() -> None:
    revocations = RevocationList()
    revocations.add(
        Revocation.new(
            subject="alice", issued_before=NOW - 5, now=NOW, forget_at=NOW + 60, revoked_by="root"
        )
    )
    guard = guard_over(revocations)
    assert refusal(guard, principal(issued_at=NOW - 6)) == "SESSION_REVOKED"
    assert refusal(guard, principal(issued_at=NOW - 5)) == "OK"  # signed in again at the cut-off
    # Service accounts are covered too, without a sid.
    revocations.add(
        Revocation.new(
            subject="agentic-beat",
            issued_before=NOW,
            now=NOW,
            forget_at=NOW + 60,
            revoked_by="root",
        )
    )
    assert refusal(guard, principal("agentic-beat", sid=None)) == "SESSION_REVOKED"


def test_revocations_are_forgotten_at_their_time_and_known_once() -> None:
    revocations = RevocationList()
    kept = Revocation.new(subject="a", session_id="1", now=NOW, forget_at=NOW + 60, revoked_by="a")
    gone = Revocation.new(
        subject="b", issued_before=NOW, now=NOW, forget_at=NOW + 1, revoked_by="r"
    )
    assert revocations.add_all([kept, gone, kept]) == 2
    assert revocations.prune(NOW + 2) == 1
    assert len(revocations) == 1
    assert revocations.refuses(principal("a", sid="1"))
    assert not revocations.refuses(principal("b", issued_at=NOW - 100))


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (principal(sid=None), "SESSION_REQUIRED"),
        (principal("agentic-beat", sid=None), "OK"),
        (principal("oncall", sid=None, roles=frozenset({Role.SUPPORT_ENGINEER})), "OK"),
        (principal(issued_at=NOW - MAX_AGE - 1), "SESSION_EXPIRED"),
        (principal("agentic-beat", issued_at=NOW - 30 * 86400), "OK"),  # never aged out
        (principal(issued_at=NOW - MAX_AGE + 1), "OK"),
    ],
    ids=["no-sid", "service-subject", "service-role", "too-old", "service-old", "young-enough"],
)
def test_who_needs_a_session_and_the_maximum_age(who: Principal, expected: str) -> None:
    assert refusal(guard_over(RevocationList()), who) == expected

"""core.audit.audited: the outcome recorded for each way an action can end."""

from __future__ import annotations

import asyncio

import pytest

from core.audit import audited
from core.rpc import NotFound


def _run(action: object) -> tuple[object, list[str]]:
    recorded: list[str] = []

    async def record(outcome: str) -> None:
        recorded.append(outcome)

    async def main() -> object:
        return await audited(action, record)  # type: ignore[arg-type]

    try:
        result: object = asyncio.run(main())
    except BaseException as error:  # the action's own error stands
        result = error
    return result, recorded


def test_a_result_is_ok_and_returned() -> None:
    async def action() -> int:
        return 7

    assert _run(action()) == (7, ["OK"])


def test_a_refusal_is_its_code_and_raised() -> None:
    async def action() -> int:
        raise NotFound("no such thing", reason="X_NOT_FOUND")

    error, recorded = _run(action())
    assert isinstance(error, NotFound)
    assert recorded == ["NOT_FOUND"]


@pytest.mark.parametrize(
    ("raised", "outcome"),
    [(RuntimeError("boom"), "INTERNAL"), (asyncio.CancelledError(), "CANCELLED")],
)
def test_other_endings(raised: BaseException, outcome: str) -> None:
    async def action() -> int:
        raise raised

    error, recorded = _run(action())
    assert type(error) is type(raised)
    assert recorded == [outcome]

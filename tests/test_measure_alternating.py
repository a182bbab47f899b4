"""``devtools.measure.sample_alternating``: the pairing behind the sessions target."""

from __future__ import annotations

import asyncio
from collections import Counter

from devtools.measure import Errors, sample_alternating


def test_alternates_each_round_and_counts_failures() -> None:
    order: list[str] = []

    async def a() -> None:
        order.append("a")

    async def b() -> None:
        order.append("b")
        if len(order) % 3 == 0:
            raise RuntimeError("a failing call is still timed")

    errors: tuple[Errors, Errors] = (Counter(), Counter())
    samples = asyncio.run(
        sample_alternating((a, b), errors, rounds=5, warmup=1, time_limit_seconds=5.0)
    )
    assert order[:2] == ["a", "b"], "the warm-up round runs both paths"
    # Timed rounds: A B, B A, A B, B A, A B.
    assert "".join(order[2:]) == "abbaabbaab"
    assert [len(s) for s in samples] == [5, 5]
    assert all(ns > 0 for s in samples for ns in s)
    assert errors[0] == Counter()
    assert errors[1]["RuntimeError"] == sum(
        1 for i, who in enumerate(order, 1) if who == "b" and i % 3 == 0
    )

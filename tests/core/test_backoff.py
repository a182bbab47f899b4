"""The one backoff policy: exponential, capped, full jitter."""

from __future__ import annotations

import itertools
import random

import pytest

from core.backoff import Backoff, CoolDown


def test_ceilings_double_up_to_the_cap() -> None:
    policy = Backoff(first_seconds=0.2, max_seconds=1.0)
    assert list(itertools.islice(policy.ceilings(), 5)) == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_delays_are_full_jitter_under_each_ceiling() -> None:
    policy = Backoff(first_seconds=0.1, max_seconds=0.4)
    rng = random.Random(7)
    delays = list(itertools.islice(policy.delays(rng), 200))
    ceilings = list(itertools.islice(policy.ceilings(), 200))
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert min(delays[3:]) < 0.1 < max(delays[3:]), "spread over the whole range"


def test_a_fresh_iterator_is_a_reset() -> None:
    policy = Backoff(first_seconds=0.1, max_seconds=10.0)
    first = policy.ceilings()
    for _ in range(4):
        next(first)
    assert next(policy.ceilings()) == 0.1


@pytest.mark.parametrize(("first", "cap"), [(0.0, 1.0), (2.0, 1.0)])
def test_unusable_policies_are_refused(first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(first_seconds=first, max_seconds=cap)


def test_a_cool_down_skips_for_its_time_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("core.backoff.time.monotonic", lambda: clock[0])
    cool = CoolDown(1.5)
    assert not cool.active  # nothing failed yet
    cool.start()
    clock[0] += 1.4
    assert cool.active
    clock[0] += 0.2
    assert not cool.active
    with pytest.raises(ValueError, match="unusable cool-down"):
        CoolDown(0)

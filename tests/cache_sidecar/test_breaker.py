"""The circuit breaker state machine, on a fake clock."""

from __future__ import annotations

import pytest

from cache_sidecar._breaker import BreakerSettings, BreakerState, CircuitBreaker


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(
    clock: FakeClock, transitions: list[tuple[BreakerState, BreakerState]] | None = None
) -> CircuitBreaker:
    settings = BreakerSettings(failure_threshold=3, reset_timeout_seconds=1.0)

    def listen(old: BreakerState, new: BreakerState) -> None:
        if transitions is not None:
            transitions.append((old, new))

    return CircuitBreaker(settings, clock=clock, on_transition=listen)


def test_stays_closed_below_threshold_and_successes_reset_the_count(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(5):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.transitions == 0


def test_opens_after_consecutive_failures_and_fails_fast(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    clock.advance(0.999)
    assert not breaker.allow()


def test_half_open_lets_exactly_one_trial_through(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(1.0)
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()
    assert not breaker.allow()


def test_successful_trial_closes(clock: FakeClock) -> None:
    seen: list[tuple[BreakerState, BreakerState]] = []
    breaker = make(clock, seen)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(1.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert seen == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    assert breaker.transitions == 3


def test_failed_trial_reopens_and_restarts_the_timer(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(1.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.5)
    assert not breaker.allow()
    clock.advance(0.5)
    assert breaker.allow()


def test_a_trial_that_never_reports_does_not_wedge_the_breaker(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(1.0)
    assert breaker.allow()  # the trial's caller vanishes without reporting
    clock.advance(0.5)
    assert not breaker.allow()
    clock.advance(0.5)
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_failure_count_below_threshold_does_not_survive_a_success(clock: FakeClock) -> None:
    breaker = make(clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    ("threshold", "reset"), [(0, 1.0), (1, 0.0), (1, -1.0)], ids=["threshold", "zero", "neg"]
)
def test_settings_are_validated(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        BreakerSettings(failure_threshold=threshold, reset_timeout_seconds=reset)

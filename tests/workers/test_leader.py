"""The beat's leader lease on SQLite and PostgreSQL: one holder at a time, expiry, renewal
by the holder only, release, and a race of contenders with exactly one winner."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from core.db import make_engine, migrate
from workers._leader import LeaderLease

TTL = 10.0


class Clock:
    """A wall clock the test moves by hand (the lease's expiry reads it)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=8)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def contenders(engine: Engine) -> tuple[Clock, LeaderLease, LeaderLease]:
    clock = Clock()
    name = f"test-{uuid.uuid4().hex[:8]}"  # a lease of this test's own
    a = LeaderLease(engine, name, "a", ttl_seconds=TTL, clock=clock)
    b = LeaderLease(engine, name, "b", ttl_seconds=TTL, clock=clock)
    return clock, a, b


def test_one_holder_at_a_time(contenders: tuple[Clock, LeaderLease, LeaderLease]) -> None:
    _clock, a, b = contenders
    assert a.current() is None
    first = a.acquire()
    assert first is not None
    assert first.taken_over
    assert first.term == 1
    assert b.acquire() is None
    again = a.acquire()
    assert again is not None
    assert not again.taken_over
    assert again.term == 1
    current = a.current()
    assert current is not None
    assert current[:2] == ("a", 1)


def test_expiry_lets_a_standby_take_over_and_only_the_holder_renews(
    contenders: tuple[Clock, LeaderLease, LeaderLease],
) -> None:
    clock, a, b = contenders
    assert a.acquire() is not None
    clock.advance(TTL)  # expire_time == now: still a's
    assert b.acquire() is None
    clock.advance(0.001)
    taken = b.acquire()
    assert taken is not None
    assert taken.taken_over
    assert taken.term == 2
    # The former holder cannot renew what it lost, even though it still names itself.
    assert a.acquire() is None
    current = b.current()
    assert current is not None
    assert current[:2] == ("b", 2)
    assert current[2] == clock.now + timedelta(seconds=TTL)


def test_renewal_moves_the_expiry(contenders: tuple[Clock, LeaderLease, LeaderLease]) -> None:
    clock, a, b = contenders
    assert a.acquire() is not None
    clock.advance(8)
    renewed = a.acquire()
    assert renewed is not None
    assert not renewed.taken_over
    clock.advance(9)  # 17 s after the first take, 9 after the renewal
    assert b.acquire() is None
    clock.advance(1.5)
    assert b.acquire() is not None


def test_release_hands_over_at_once(contenders: tuple[Clock, LeaderLease, LeaderLease]) -> None:
    _clock, a, b = contenders
    assert a.acquire() is not None
    assert not b.release()  # not the holder: changes nothing
    assert b.acquire() is None
    assert a.release()
    taken = b.acquire()
    assert taken is not None
    assert taken.taken_over
    assert taken.term == 2


def test_valid_until_counts_from_before_the_update(
    contenders: tuple[Clock, LeaderLease, LeaderLease],
) -> None:
    _clock, a, _b = contenders
    before = time.monotonic()
    lease = a.acquire()
    after = time.monotonic()
    assert lease is not None
    assert before + TTL <= lease.valid_until <= after + TTL


def test_racing_contenders_have_one_winner(engine: Engine) -> None:
    clock = Clock()
    name = f"race-{uuid.uuid4().hex[:8]}"
    leases = [LeaderLease(engine, name, f"c{i}", ttl_seconds=TTL, clock=clock) for i in range(6)]
    leases[0].acquire()  # the row exists; each round starts from an expired lease
    for round_ in range(10):
        clock.advance(TTL + 1)
        barrier = threading.Barrier(len(leases))
        wins: list[str] = []
        errors: list[BaseException] = []

        def contend(
            lease: LeaderLease,
            barrier: threading.Barrier = barrier,
            wins: list[str] = wins,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait(10)
                if lease.acquire() is not None:
                    wins.append(lease.holder)
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=contend, args=(lease,)) for lease in leases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        assert len(wins) == 1, f"round {round_}: winners {wins}"
        current = leases[0].current()
        assert current is not None
        assert current[0] == wins[0]
        assert current[1] == round_ + 2

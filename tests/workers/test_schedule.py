"""The beat's schedule math: parsing, the instants on the UTC epoch, each fire's request_id,
and the loop's fire policy (driven by hand, with a fake lease and clocks)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import grpc
import pytest
from agentic.tasks.v1 import tasks_pb2

from core.config import ConfigError
from workers._beat_config import BeatConfig
from workers._leader import Lease
from workers._schedule import Entry, parse_duration, parse_schedule, request_id
from workers.beat import JOBS, Beat, SubmitError

T0 = datetime(2026, 3, 29, 0, 59, 58, tzinfo=UTC)  # the night Europe moves its clocks


def test_durations() -> None:
    assert [parse_duration(raw) for raw in ("30", "30s", "5m", "2h", "1d", " 7 d ")] == [
        30,
        30,
        300,
        7200,
        86400,
        604800,
    ]
    for bad in ("", "1.5m", "-1s", "1w", "m"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)


def test_parse_schedule() -> None:
    assert parse_schedule("health_probe=1m, retention=1d@3h ,backup=off,") == (
        Entry("health_probe", 60),
        Entry("retention", 86400, 10800),
        Entry("backup", 0),
    )
    assert parse_schedule("") == ()
    for bad, why in [
        ("health_probe", "job=EVERY"),
        ("Health=1m", "job=EVERY"),
        ("a=1m,a=2m", "twice"),
        ("a=0s", "at least 1s"),
        ("a=1h@1h", "less than the interval"),
        ("a=1h@x", "duration"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_schedule(bad)


def test_instants_are_fixed_points_of_utc_time() -> None:
    every_2s = Entry("j", 2)
    assert every_2s.latest(T0) == T0
    assert every_2s.latest(T0 + timedelta(seconds=1.999)) == T0
    assert every_2s.next_after(T0) == T0 + timedelta(seconds=2)
    daily_3am = Entry("j", 86400, 3 * 3600)
    assert daily_3am.latest(T0) == datetime(2026, 3, 28, 3, tzinfo=UTC)
    assert daily_3am.next_after(T0) == datetime(2026, 3, 29, 3, tzinfo=UTC)
    # Another zone names the same instant: the same fire (no DST can move it).
    paris = timezone(timedelta(hours=2))
    assert daily_3am.latest(T0.astimezone(paris)) == daily_3am.latest(T0)
    quarter_past = Entry("j", 3600, 900)
    assert quarter_past.latest(T0) == datetime(2026, 3, 29, 0, 15, tzinfo=UTC)
    weekly_monday = parse_schedule("j=7d@4d")[0]  # 1970-01-01 was a Thursday
    assert weekly_monday.latest(T0) == datetime(2026, 3, 23, tzinfo=UTC)
    assert datetime(2026, 3, 23, tzinfo=UTC).weekday() == 0
    assert Entry("j", 0).latest(T0) is None
    assert Entry("j", 0).paused
    with pytest.raises(ValueError, match="aware"):
        every_2s.latest(datetime(2026, 1, 1))


def test_request_id_is_derived_from_job_and_instant() -> None:
    first = request_id("health_probe", T0)
    assert first == request_id("health_probe", T0.astimezone(timezone(timedelta(hours=-5))))
    assert uuid.UUID(first).version == 5
    assert first != request_id("health_probe", T0 + timedelta(seconds=1))
    assert first != request_id("retention", T0)
    # Fixed across releases: a changed derivation would submit every recent fire again.
    assert first == str(
        uuid.uuid5(uuid.UUID("5f0c3f7e-2b8e-5a35-9d0c-6c1b9a0e4b11"), "health_probe/1774745998")
    )


def test_config_checks_jobs_and_renewal() -> None:
    config = BeatConfig.from_env({}, jobs=frozenset(JOBS))
    # The default: every job of core.tasks.JOBS scheduled (backup at 02:00 UTC, retention
    # after it at 03:00, warming every 10 minutes, the probe every minute).
    assert set(config.schedule) == {
        Entry("health_probe", 60),
        Entry("cache_warm", 600, 30),
        Entry("backup", 86400, 7200),
        Entry("retention", 86400, 10800),
    }
    assert {entry.job for entry in config.schedule} == set(JOBS)
    assert config.holder.startswith("beat@")
    with pytest.raises(ConfigError, match="unknown jobs"):
        BeatConfig.from_env({"AGENTIC_SCHEDULE": "nope=1m"}, jobs=frozenset(JOBS))
    with pytest.raises(ConfigError, match="AGENTIC_SCHEDULE"):
        BeatConfig.from_env({"AGENTIC_SCHEDULE": "health_probe=soon"})
    with pytest.raises(ConfigError, match="at most half"):
        BeatConfig.from_env(
            {"AGENTIC_BEAT_LEASE_TTL_SECONDS": "4", "AGENTIC_BEAT_RENEW_SECONDS": "3"}
        )


# --- the loop's policy, with a lease and clocks of the test's own ------------------------


class FakeLease:
    """A lease the test grants and takes away; ``valid_for`` seconds each grant."""

    holder = "test"

    def __init__(self, clocks: Clocks) -> None:
        self.clocks = clocks
        self.granted = True
        self.term = 0
        self.fail = False

    def acquire(self) -> Lease | None:
        if self.fail:
            raise OSError("database unreachable")
        if not self.granted:
            return None
        return Lease(term=self.term, valid_until=self.clocks.mono + 10, taken_over=False)

    def release(self) -> bool:
        return True


class Clocks:
    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


@dataclass
class Harness:
    """A beat on a fake lease and clocks, and what its fires did."""

    beat: Beat
    clocks: Clocks
    lease: FakeLease
    fired: list[tuple[str, str]] = field(default_factory=list)
    """(job, request_id) of every fire the API accepted."""
    walls: list[datetime] = field(default_factory=list)
    """The wall time of each accepted fire."""
    failures: list[SubmitError] = field(default_factory=list)
    """The next fires fail with these, one each."""
    audited: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    """(job, summary, outcome) of every fire the beat recorded in the audit log."""

    def fire(self, job: str, rid: str) -> tasks_pb2.Task:
        if self.failures:
            raise self.failures.pop(0)
        self.fired.append((job, rid))
        self.walls.append(self.clocks.wall)
        return tasks_pb2.Task(id=rid)

    def ids(self) -> list[str]:
        return [rid for _, rid in self.fired]


@pytest.fixture
def loop() -> Harness:
    clocks = Clocks()
    lease = FakeLease(clocks)
    harness: Harness

    def fire(job: str, rid: str) -> tasks_pb2.Task:
        return harness.fire(job, rid)

    beat = Beat(
        parse_schedule("health_probe=2s, paused=off"),
        lease,  # the lease's interface, without a database
        fire,
        renew_seconds=0.5,
        audit=lambda job, summary, outcome: harness.audited.append((job, dict(summary), outcome)),
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )
    harness = Harness(beat, clocks, lease)
    return harness


def at(seconds: float) -> str:
    return request_id("health_probe", T0 + timedelta(seconds=seconds))


def test_the_leader_fires_each_instant_once_and_wakes_for_the_next(
    loop: Harness,
) -> None:
    beat, clocks = loop.beat, loop.clocks
    clocks.advance(0.3)
    wait = beat.step()
    assert loop.fired == [("health_probe", at(0))]
    assert wait == pytest.approx(0.5)  # the next lease poll comes before the next instant (2)
    while clocks.wall < T0 + timedelta(seconds=2.05):
        clocks.advance(beat.step())  # sleeps exactly as long as the loop asks
    assert loop.ids() == [at(0), at(2)]
    # The first at once, the next exactly at its instant (the loop woke for it).
    assert loop.walls == [T0 + timedelta(seconds=0.3), T0 + timedelta(seconds=2)]


def test_a_standby_fires_nothing_and_a_takeover_fires_only_the_latest_missed(
    loop: Harness,
) -> None:
    beat, clocks, lease = loop.beat, loop.clocks, loop.lease
    lease.granted = False
    for _ in range(30):  # 7.5 s as a standby: instants 0, 2, 4, 6 pass
        clocks.advance(0.25)
        beat.step()
    assert loop.fired == []
    lease.granted = True
    clocks.advance(0.25)  # 7.75 s
    beat.step()
    assert loop.ids() == [at(6)]  # once, not 0, 2, 4 and 6


def test_the_repeat_of_a_predecessors_fire_has_its_request_id(
    loop: Harness,
) -> None:
    beat, clocks, lease = loop.beat, loop.clocks, loop.lease
    clocks.advance(0.1)
    beat.step()
    lease.granted = False
    clocks.advance(0.5)
    beat.step()  # lost the lease
    lease.granted = True
    clocks.advance(0.5)
    beat.step()  # leads again within the same interval: the same fire, the same id
    assert loop.ids() == [at(0), at(0)]


def test_a_failed_fire_is_retried_with_its_request_id_and_then_superseded(
    loop: Harness,
) -> None:
    beat, clocks = loop.beat, loop.clocks
    # One failure: the retry comes within the first backoff ceiling (1 s), before instant 2.
    loop.failures.append(SubmitError(grpc.StatusCode.UNAVAILABLE, "down"))
    clocks.advance(0.1)
    beat.step()
    assert loop.fired == []
    while not loop.fired:
        clocks.advance(min(beat.step(), 0.05))
    assert loop.fired == [("health_probe", at(0))]
    loop.failures.extend([SubmitError(grpc.StatusCode.UNAVAILABLE, "down")] * 1000)
    while clocks.wall < T0 + timedelta(seconds=5):
        clocks.advance(min(beat.step(), 0.05))
    loop.failures.clear()
    while len(loop.fired) < 2:
        clocks.advance(min(beat.step(), 0.05))
    # 2 was never submitted, and is not replayed: the retry that succeeds submits the
    # instant that is the latest when it runs.
    second = loop.walls[1]
    latest = Entry("health_probe", 2).latest(second)
    assert latest is not None
    assert latest >= T0 + timedelta(seconds=4)
    assert loop.ids() == [at(0), request_id("health_probe", latest)]


def test_a_lease_that_cannot_be_renewed_stops_the_fires_when_it_lapses(
    loop: Harness,
) -> None:
    beat, clocks, lease = loop.beat, loop.clocks, loop.lease
    clocks.advance(0.1)
    beat.step()
    lease.fail = True
    for _ in range(40):  # 10 s: the lease granted at 0.1 is valid until 10.1
        clocks.advance(0.25)
        beat.step()
    assert loop.ids() == [at(0), at(2), at(4), at(6), at(8)]
    assert not beat.leading()


def test_every_fire_is_audited_with_its_outcome(loop: Harness) -> None:
    beat, clocks = loop.beat, loop.clocks
    loop.failures.append(SubmitError(grpc.StatusCode.UNAVAILABLE, "the API is away"))
    clocks.advance(0.3)
    beat.step()  # the fire at 0 fails
    while not loop.fired:
        clocks.advance(beat.step())  # its retry, same request_id, is submitted
    assert [(job, summary["request_id"], outcome) for job, summary, outcome in loop.audited] == [
        ("health_probe", at(0), "UNAVAILABLE"),
        ("health_probe", at(0), "OK"),
    ]
    failed, submitted = (summary for _, summary, _ in loop.audited)
    assert "the API is away" in failed["error"]
    assert submitted["task_id"] == at(0)  # the fake API's task id is the request_id
    assert submitted["instant"] == T0.isoformat()

"""Two real beat processes against a real API server, worker and RabbitMQ (private vhost).

Each scheduled instant of a fast schedule (every 2 s) becomes exactly one probe task, found
by the request_id derived from job and instant; only the leader fires; after a kill -9 of
the leader the standby leads within the stated bound (TTL + one renew interval), fires the
most recent missed instant once and every following one; no instant is lost or doubled
beyond what that policy says.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from sqlalchemy import select

from core.db import AuditEventRow, SchedulerLeaseRow, TaskRow
from tests._identity import Role, token
from tests._processes import Service, start_service
from tests._scrape import metrics_text
from tests._support import wait_for
from tests.workers._stack import Stack, private_vhost, stack
from workers._schedule import Entry, request_id
from workers.beat import JOBS, SubmitError, TaskClient, submit_job

EVERY_SECONDS = 2
TTL_SECONDS = 3.0
RENEW_SECONDS = 0.5
TAKEOVER_BOUND_SECONDS = TTL_SECONDS + RENEW_SECONDS  # what the README states, in these terms
JOB = "health_probe"
BEAT_IDENTITY = "agentic-beat"


@dataclass
class Beats:
    stack: Stack
    env: dict[str, str]
    workdir: Path
    token_file: Path

    def start(self, name: str) -> Service:
        return start_service(
            "workers.beat", {**self.env, "AGENTIC_BEAT_NAME": name}, self.workdir / name
        )


@pytest.fixture(scope="module")
def beats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Beats]:
    workdir = tmp_path_factory.mktemp("beat")
    with (
        private_vhost() as broker_url,
        stack(workdir, broker_url, f"sqlite:///{workdir / 'beat.db'}") as s,
    ):
        s.start_server()
        s.start_worker()
        token_file = workdir / "beat.token"
        # The least the one job needs: SubmitProbe is open to support engineers.
        token_file.write_text(token(BEAT_IDENTITY, (Role.SUPPORT_ENGINEER,)))
        env = {
            "DATABASE_URL": s.database_url,
            "AGENTIC_BEAT_API_ADDRESS": s.servers[0].address,
            "AGENTIC_BEAT_TOKEN_FILE": str(token_file),
            "AGENTIC_SCHEDULE": f"{JOB}={EVERY_SECONDS}s",
            "AGENTIC_BEAT_LEASE_TTL_SECONDS": str(TTL_SECONDS),
            "AGENTIC_BEAT_RENEW_SECONDS": str(RENEW_SECONDS),
            "AGENTIC_BEAT_METRICS_ADDRESS": "127.0.0.1:0",
        }
        yield Beats(s, env, workdir, token_file)


def fired_instants(s: Stack, since: datetime, until: datetime) -> dict[datetime, int]:
    """Scheduled instant -> number of tasks with its derived request_id; fails on any task
    whose request_id is not a fire of ``JOB`` between ``since`` and ``until``."""
    entry = Entry(JOB, EVERY_SECONDS)
    first = entry.latest(since)
    assert first is not None
    candidates: dict[str, datetime] = {}
    instant = first - timedelta(seconds=EVERY_SECONDS)
    while instant <= until:
        candidates[request_id(JOB, instant)] = instant
        instant += timedelta(seconds=EVERY_SECONDS)
    with s.db().connect() as conn:
        rows = conn.execute(select(TaskRow.request_id, TaskRow.owner_id)).all()
    counts: dict[datetime, int] = {}
    for rid, owner in rows:
        if owner != BEAT_IDENTITY:
            continue  # another test's task
        assert rid in candidates, f"a task no scheduled fire explains: {rid}"
        counts[candidates[rid]] = counts.get(candidates[rid], 0) + 1
    return counts


def lease_row(s: Stack) -> tuple[str, int, datetime]:
    with s.db().connect() as conn:
        row = conn.execute(
            select(SchedulerLeaseRow.holder, SchedulerLeaseRow.term, SchedulerLeaseRow.acquire_time)
        ).one()
    holder, term, acquired = row
    return str(holder), int(term), acquired.replace(tzinfo=UTC)


def scrape(service: Service) -> str:
    return metrics_text(service.ready["metrics_port"])


def sample(metrics: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics, flags=re.MULTILINE)
    assert match is not None, f"{name} not in the metrics"
    return float(match.group(1))


def test_two_beats_fire_each_instant_once_across_a_kill_9_of_the_leader(beats: Beats) -> None:
    s = beats.stack
    started = datetime.now(UTC)
    first, second = beats.start("beat-a"), beats.start("beat-b")
    try:
        # Both run: let six instants pass.
        wait_for(
            lambda: len(fired_instants(s, started, datetime.now(UTC))) >= 6,
            timeout=6 * EVERY_SECONDS + 10,
            message="six fires with two beats running",
        )
        holder, term, _ = lease_row(s)
        assert holder in {first.ready["holder"], second.ready["holder"]}
        assert holder.startswith(("beat-a/", "beat-b/"))  # the name, and its random suffix
        leader, standby = (first, second) if holder == first.ready["holder"] else (second, first)
        assert term == 1  # nobody took over while both ran
        submitted = f'agentic_scheduler_fires_total{{job="{JOB}",outcome="submitted"}}'
        assert sample(scrape(leader), "agentic_scheduler_leader") == 1
        assert sample(scrape(standby), "agentic_scheduler_leader") == 0
        assert sample(scrape(standby), submitted) == 0  # the standby never fired
        assert sample(scrape(leader), submitted) >= 6

        # kill -9 the leader right after one of its fires, so that fire is whole.
        before = len(fired_instants(s, started, datetime.now(UTC)))
        wait_for(
            lambda: len(fired_instants(s, started, datetime.now(UTC))) > before,
            timeout=EVERY_SECONDS + 5,
            message="the leader's next fire",
        )
        leader.process.kill()
        killed = datetime.now(UTC)
        leader.process.wait(5)
        last_before = max(fired_instants(s, started, killed))

        wait_for(
            lambda: lease_row(s)[0] == standby.ready["holder"],
            timeout=TAKEOVER_BOUND_SECONDS + 5,
            message="the standby to take the lease",
        )
        _, new_term, acquired = lease_row(s)
        takeover_seconds = (acquired - killed).total_seconds()
        print(f"takeover {takeover_seconds:.2f}s after kill -9 (bound {TAKEOVER_BOUND_SECONDS}s)")
        assert new_term == 2
        assert takeover_seconds <= TAKEOVER_BOUND_SECONDS + 0.3, takeover_seconds
        resumed = Entry(JOB, EVERY_SECONDS).latest(acquired)
        assert resumed is not None

        # The new leader: the most recent missed instant at once, then four more.
        wait_for(
            lambda: (
                len([t for t in fired_instants(s, started, datetime.now(UTC)) if t >= resumed]) >= 5
            ),
            timeout=5 * EVERY_SECONDS + 10,
            message="five fires by the new leader",
        )
        assert sample(scrape(standby), "agentic_scheduler_leader") == 1
        assert standby.stop() == 0  # SIGTERM: gives the lease up and exits cleanly
        assert lease_row(s)[0] == ""
        ended = datetime.now(UTC)
    finally:
        for beat in (first, second):
            beat.stop(signal.SIGKILL)  # a no-op for one that exited

    counts = fired_instants(s, started, ended)
    assert set(counts.values()) == {1}, counts  # the unique request_id is one task per fire
    instants = sorted(counts)
    step = timedelta(seconds=EVERY_SECONDS)

    def run(start: datetime, end: datetime) -> list[datetime]:
        out = []
        while start <= end:
            out.append(start)
            start += step
        return out

    skipped = run(last_before + step, resumed - step)
    assert instants == run(instants[0], last_before) + run(resumed, instants[-1]), (
        f"fires {instants}; last before the kill {last_before}, resumed at {resumed}"
    )
    # Leaderless for at most TTL + renew (3.5 s): at most one 2 s instant in between, and it
    # is skipped, not replayed (the policy), while the most recent one fired on takeover.
    assert len(skipped) <= 1, skipped
    with s.db().connect() as conn:
        created = dict(
            conn.execute(
                select(TaskRow.request_id, TaskRow.create_time).where(
                    TaskRow.owner_id == BEAT_IDENTITY
                )
            ).all()
        )
    late = [
        (created[request_id(JOB, t)].replace(tzinfo=UTC) - t).total_seconds()
        for t in instants
        if t not in (instants[0], resumed)  # a leadership's first fire is late by design
    ]
    print(
        f"fires: {len(instants)}, skipped while nobody led: {len(skipped)}, "
        f"accepted after the instant: max {max(late):.3f}s"
    )
    assert max(late) < 0.5, late  # on time: the loop wakes for each instant

    # Every fire is in the audit log, by the beat that fired it, with its task; but the
    # killed leader may have died between its last submit and that submit's audit row.
    with s.db().connect() as conn:
        runs = conn.execute(
            select(AuditEventRow.subject, AuditEventRow.request_json).where(
                AuditEventRow.action == f"job:{JOB}", AuditEventRow.outcome == "OK"
            )
        ).all()
    audited = {json.loads(body)["request_id"]: subject for subject, body in runs}
    assert set(audited) >= {request_id(JOB, t) for t in instants if t != last_before}
    assert {subject.removeprefix("beat/").split("/")[0] for subject in audited.values()} <= {
        "beat-a",
        "beat-b",
    }

    # Every fire is an ordinary probe task that the worker ran.
    def all_succeeded() -> bool:
        with s.db().connect() as conn:
            states = conn.execute(
                select(TaskRow.state).where(TaskRow.owner_id == BEAT_IDENTITY)
            ).scalars()
            return all(state == pb.TASK_STATE_SUCCEEDED for state in states)

    wait_for(all_succeeded, timeout=20, message="every scheduled probe to succeed")


def test_a_double_fire_submits_one_task(beats: Beats) -> None:
    # Another identity than the running beats', so their test counts none of these tasks
    # whatever the order of the tests.
    token_file = beats.workdir / "double.token"
    token_file.write_text(token("double-fire", (Role.SUPPORT_ENGINEER,)))
    client = TaskClient(
        beats.env["AGENTIC_BEAT_API_ADDRESS"], token_file=str(token_file), timeout_seconds=5
    )
    try:
        instant = datetime(2026, 1, 1, 12, tzinfo=UTC)
        once = submit_job(client, JOBS[JOB], request_id(JOB, instant))
        again = submit_job(client, JOBS[JOB], request_id(JOB, instant))
        other = submit_job(client, JOBS[JOB], request_id(JOB, instant + timedelta(seconds=2)))
    finally:
        client.close()
    assert once.id == again.id
    assert other.id != once.id
    assert once.owner_id == "double-fire"
    assert once.kind == pb.TASK_KIND_PROBE
    with beats.stack.db().connect() as conn:
        rows = conn.execute(
            select(TaskRow.id).where(TaskRow.request_id == request_id(JOB, instant))
        ).all()
    assert len(rows) == 1


def test_a_token_that_cannot_be_read_is_a_clear_submit_error(beats: Beats) -> None:
    client = TaskClient(
        beats.env["AGENTIC_BEAT_API_ADDRESS"],
        token_file=str(beats.workdir / "missing.token"),
        timeout_seconds=2,
    )
    try:
        with pytest.raises(SubmitError, match="token file") as caught:
            submit_job(client, JOBS[JOB], request_id(JOB, datetime(2026, 1, 1, tzinfo=UTC)))
    finally:
        client.close()
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED

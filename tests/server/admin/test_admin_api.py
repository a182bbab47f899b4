"""AdminService over real gRPC against a real server process of its own, on SQLite and
PostgreSQL: task statistics and purges checked against rows this module wrote (with
chosen times), bad input with field violations, and the audit log of every call.

The server has a private database (not the suite's shared ``api``), so the counts it
reports are exactly what the test made. Tasks are inserted as rows, not submitted: their
create, start and end times are the test's to choose, which the percentiles need.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from agentic.admin.v1 import admin_pb2 as pb
from agentic.admin.v1 import admin_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as tpb
from google.protobuf import duration_pb2
from sqlalchemy import Engine, func, select

from core.db import AuditEventRow, TaskEventRow, TaskRow, make_engine
from server.auth import Role
from tests._identity import ADMIN, SERVICE_ACCOUNT_LIMITS, authorized_channel
from tests._processes import start_service
from tests._status import rich_status
from tests._support import fresh_database
from tests._task_rows import add_task, clear_tasks

TIMEOUT = 10.0
SERVICE = "/agentic.admin.v1.AdminService/"
TERMINAL = (tpb.TASK_STATE_SUCCEEDED, tpb.TASK_STATE_FAILED, tpb.TASK_STATE_CANCELLED)


@dataclass
class Admin:
    """The server, an Administrator's stub, and its database."""

    stub: admin_pb2_grpc.AdminServiceStub
    engine: Engine
    address: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def admin(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Admin]:
    tmp: Path = tmp_path_factory.mktemp(f"admin-{request.param}")
    with fresh_database(request.param, tmp, "admin") as url:
        service = start_service(
            "server",
            {
                "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
                "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
                "DATABASE_URL": url,
                "AGENTIC_CACHE_ADDRESS": "",
                "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
                **SERVICE_ACCOUNT_LIMITS,
            },
            tmp / "api",
        )
        channel = authorized_channel(service.address)
        engine = make_engine(url, pool_size=2)
        try:
            yield Admin(admin_pb2_grpc.AdminServiceStub(channel), engine, service.address)
        finally:
            channel.close()
            engine.dispose()
            assert service.stop() == 0, service.log()


NOW = datetime.now(UTC)


def task_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(select(TaskRow.id)))


def event_task_ids(engine: Engine) -> Counter[str]:
    with engine.connect() as connection:
        return Counter(connection.scalars(select(TaskEventRow.task_id)))


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=value))
    return duration


def audit_rows(engine: Engine) -> list[AuditEventRow]:
    with engine.connect() as connection:
        query = select(AuditEventRow.__table__).order_by(AuditEventRow.create_time)
        return list(connection.execute(query))  # type: ignore[arg-type]


# --- GetTaskStats ---------------------------------------------------------------------


def test_task_stats_report_the_counts_the_age_and_the_percentiles_of_what_was_made(
    admin: Admin,
) -> None:
    clear_tasks(admin.engine)
    made: Counter[tuple[int, int]] = Counter()
    # 20 probes that waited 1..20 s and ran 2..40 s, all within the last hour.
    for i in range(1, 21):
        created = NOW - timedelta(minutes=30)
        started = created + timedelta(seconds=i)
        add_task(
            admin.engine, created=created, started=started, ended=started + timedelta(seconds=2 * i)
        )
        made[(tpb.TASK_KIND_PROBE, tpb.TASK_STATE_SUCCEEDED)] += 1
    # Older than the window: counted, but not in the timings.
    old = NOW - timedelta(days=3)
    add_task(
        admin.engine,
        created=old,
        started=old + timedelta(seconds=500),
        ended=old + timedelta(seconds=900),
    )
    made[(tpb.TASK_KIND_PROBE, tpb.TASK_STATE_SUCCEEDED)] += 1
    # Pending and running analytics; the oldest pending was created 600 s ago.
    for age in (600, 300):
        add_task(
            admin.engine,
            kind=tpb.TASK_KIND_ANALYTICS,
            state=tpb.TASK_STATE_PENDING,
            created=NOW - timedelta(seconds=age),
        )
        made[(tpb.TASK_KIND_ANALYTICS, tpb.TASK_STATE_PENDING)] += 1
    started = NOW - timedelta(seconds=50)
    add_task(
        admin.engine,
        kind=tpb.TASK_KIND_ANALYTICS,
        state=tpb.TASK_STATE_RUNNING,
        created=started - timedelta(seconds=7),
        started=started,
    )
    made[(tpb.TASK_KIND_ANALYTICS, tpb.TASK_STATE_RUNNING)] += 1

    stats = admin.stub.GetTaskStats(pb.GetTaskStatsRequest(window=seconds(3600)), timeout=TIMEOUT)

    assert {(c.kind, c.state): c.count for c in stats.counts} == dict(made)
    age = stats.oldest_pending_age.ToTimedelta().total_seconds()
    elapsed = (datetime.now(UTC) - NOW).total_seconds()
    assert 600 <= age <= 600 + elapsed + 1, age
    timings = {t.kind: t for t in stats.timings}
    assert set(timings) == {tpb.TASK_KIND_PROBE, tpb.TASK_KIND_ANALYTICS}
    probe = timings[tpb.TASK_KIND_PROBE]
    # Nearest rank over 1..20: p50 is the 10th value, p95 the 19th.
    assert (probe.started, probe.ended) == (20, 20)
    assert probe.queue_wait_p50.ToTimedelta() == timedelta(seconds=10)
    assert probe.queue_wait_p95.ToTimedelta() == timedelta(seconds=19)
    assert probe.run_time_p50.ToTimedelta() == timedelta(seconds=20)
    assert probe.run_time_p95.ToTimedelta() == timedelta(seconds=38)
    analytics = timings[tpb.TASK_KIND_ANALYTICS]
    assert (analytics.started, analytics.ended) == (1, 0)
    assert analytics.queue_wait_p50.ToTimedelta() == timedelta(seconds=7)
    assert not analytics.HasField("run_time_p50")

    # A window of 1 s holds none of them; the counts stay (they are not windowed).
    narrow = admin.stub.GetTaskStats(pb.GetTaskStatsRequest(window=seconds(1)), timeout=TIMEOUT)
    assert list(narrow.timings) == []
    assert {(c.kind, c.state): c.count for c in narrow.counts} == dict(made)


# --- PurgeTasks -----------------------------------------------------------------------


def test_purge_deletes_exactly_the_old_terminal_tasks_and_their_events_in_batches(
    admin: Admin,
) -> None:
    clear_tasks(admin.engine)
    day_ago = NOW - timedelta(days=2)
    old_terminal = {
        add_task(admin.engine, state=TERMINAL[i % 3], created=day_ago, events=1 + i % 4)
        for i in range(20)
    }
    young_terminal = {
        add_task(admin.engine, state=s, created=NOW - timedelta(minutes=5)) for s in TERMINAL
    }
    old_live = {
        add_task(admin.engine, state=s, created=day_ago)
        for s in (tpb.TASK_STATE_PENDING, tpb.TASK_STATE_RUNNING, tpb.TASK_STATE_RETRY_SCHEDULED)
    }
    events_before = event_task_ids(admin.engine)
    old_events = sum(events_before[t] for t in old_terminal)
    day = seconds(86400)

    dry = admin.stub.PurgeTasks(pb.PurgeTasksRequest(older_than=day, dry_run=True), timeout=TIMEOUT)
    assert (dry.tasks, dry.events, dry.batches, dry.dry_run) == (20, old_events, 0, True)
    assert task_ids(admin.engine) == old_terminal | young_terminal | old_live, "a dry run deleted"

    # Only the failed ones first, then the rest in batches of 7.
    failed = {t for t in old_terminal if _state(admin.engine, t) == tpb.TASK_STATE_FAILED}
    assert len(failed) == 7  # i % 3 == 1 for i in 0..19
    only_failed = admin.stub.PurgeTasks(
        pb.PurgeTasksRequest(older_than=day, states=[tpb.TASK_STATE_FAILED]), timeout=TIMEOUT
    )
    assert only_failed.tasks == len(failed)
    assert task_ids(admin.engine) == (old_terminal - failed) | young_terminal | old_live
    rest = old_terminal - failed
    done = admin.stub.PurgeTasks(
        pb.PurgeTasksRequest(older_than=day, batch_size=7), timeout=TIMEOUT
    )
    assert done.tasks == len(rest)
    assert done.events == sum(events_before[t] for t in rest)
    assert (len(rest), done.batches) == (13, 2)  # 7 + 6
    assert task_ids(admin.engine) == young_terminal | old_live
    events_after = event_task_ids(admin.engine)
    assert set(events_after) == young_terminal | old_live, "events of kept tasks must stay"
    assert all(events_after[t] == events_before[t] for t in young_terminal | old_live)

    again = admin.stub.PurgeTasks(pb.PurgeTasksRequest(older_than=day), timeout=TIMEOUT)
    assert (again.tasks, again.events) == (0, 0)


def _state(engine: Engine, task_id: str) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(TaskRow.state).where(TaskRow.id == task_id)) or 0)


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "request_message", "field", "reason"),
    [
        ("PurgeTasks", pb.PurgeTasksRequest(dry_run=True), "older_than", "older_than.required"),
        (
            "PurgeTasks",
            pb.PurgeTasksRequest(
                older_than=duration_pb2.Duration(seconds=60),
                states=[tpb.TASK_STATE_SUCCEEDED, tpb.TASK_STATE_PENDING],
            ),
            "states[1]",
            "states.not_terminal",
        ),
        (
            "GetTaskStats",
            pb.GetTaskStatsRequest(window=duration_pb2.Duration(seconds=60, nanos=-5)),
            "window",
            "duration.invalid",
        ),
        (
            "ClearCacheNamespace",
            pb.ClearCacheNamespaceRequest(namespace="nope"),
            "namespace",
            "namespace.unknown",
        ),
        (
            "ListAuditEvents",
            pb.ListAuditEventsRequest(page_token="not-a-token"),
            "page_token",
            "page_token.invalid",
        ),
    ],
    ids=[
        "purge-no-age",
        "purge-live-state",
        "malformed-window",
        "unknown-namespace",
        "bad-page-token",
    ],
)
def test_bad_input_is_invalid_argument_with_a_field_violation_and_is_audited(
    admin: Admin, method: str, request_message: object, field: str, reason: str
) -> None:
    before = len(audit_rows(admin.engine))
    tasks_before = task_ids(admin.engine)
    with pytest.raises(grpc.RpcError) as info:
        getattr(admin.stub, method)(request_message, timeout=TIMEOUT)
    status = rich_status(info.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.domain in {"agentic.admin.v1", "agentic.backend"}
    assert field in status.violations, status.violations
    assert status.violation_reasons[field] == reason
    assert task_ids(admin.engine) == tasks_before
    rows = audit_rows(admin.engine)
    assert len(rows) == before + 1
    assert (rows[-1].action, rows[-1].outcome, rows[-1].subject) == (
        SERVICE + method,
        "INVALID_ARGUMENT",
        ADMIN,
    )


def test_a_non_administrator_is_refused_and_not_audited(admin: Admin) -> None:
    before = len(audit_rows(admin.engine))
    channel = authorized_channel(admin.address, "lead-1", (Role.TECHNICAL_LEAD,))
    try:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.PurgeTasks(pb.PurgeTasksRequest(older_than=seconds(60)), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        channel.close()
    assert len(audit_rows(admin.engine)) == before


# --- the audit log --------------------------------------------------------------------


def test_every_admin_call_is_audited_and_listed_newest_first_page_by_page(admin: Admin) -> None:
    marker = str(uuid.uuid4().int % 10_000 + 1)  # a window of this many seconds marks our call
    admin.stub.GetTaskStats(pb.GetTaskStatsRequest(window=seconds(int(marker))), timeout=TIMEOUT)
    admin.stub.GetCacheStats(pb.GetCacheStatsRequest(), timeout=TIMEOUT)
    admin.stub.PurgeTasks(
        pb.PurgeTasksRequest(older_than=seconds(3600), dry_run=True), timeout=TIMEOUT
    )
    with admin.engine.connect() as connection:
        total = int(connection.scalar(select(func.count()).select_from(AuditEventRow)) or 0)

    listed: list[pb.AuditEvent] = []
    token = ""
    pages = 0
    while True:
        page = admin.stub.ListAuditEvents(
            pb.ListAuditEventsRequest(page_size=2, page_token=token), timeout=TIMEOUT
        )
        listed += page.audit_events
        pages += 1
        token = page.next_page_token
        if not token:
            break
        assert pages <= total, "paging does not end"
    # Each ListAuditEvents call is recorded after it answered: the walk sees the rows that
    # existed before it plus the ones of its own earlier pages.
    assert len({e.id for e in listed}) == len(listed), "an event was listed twice"
    assert len(listed) >= total
    times = [e.time.ToDatetime() for e in listed]
    assert times == sorted(times, reverse=True)
    newest_three = [e for e in listed if not e.action.endswith("/ListAuditEvents")][:3]
    assert [e.action for e in newest_three] == [
        SERVICE + "PurgeTasks",
        SERVICE + "GetCacheStats",
        SERVICE + "GetTaskStats",
    ]
    assert all(e.subject == ADMIN and e.outcome == "OK" for e in newest_three)
    purge = json.loads(newest_three[0].request_json)
    assert purge == {"olderThan": "3600s", "dryRun": True}
    assert json.loads(newest_three[2].request_json) == {"window": f"{marker}s"}


def test_cache_calls_without_a_sidecar_say_so(admin: Admin) -> None:
    stats = admin.stub.GetCacheStats(pb.GetCacheStatsRequest(), timeout=TIMEOUT)
    assert not stats.cache_enabled
    assert not stats.namespaces
    assert not stats.nodes
    cleared = admin.stub.ClearCacheNamespace(
        pb.ClearCacheNamespaceRequest(namespace="projects"), timeout=TIMEOUT
    )
    assert not cleared.cleared

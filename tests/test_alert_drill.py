"""The live alert drill: a real Prometheus scrapes a running stack and evaluates the repo's rules.

One stack for the module (its start-up is paid once): a private vhost and memcached, the
cache sidecar, the API server, a worker and a beat, each serving ``/metrics`` on a port of
its own, and Debian's ``prometheus`` (``devtools.prometheus``) scraping all four every
second and evaluating ``deploy/prometheus/alerts.yml`` every second, every ``for:``
shortened to one evaluation (``write_drill_rules``).

- On the healthy stack, every metric and label that the rules and the Grafana dashboard
  name is one the running processes really export (scraped from each ``/metrics``), every
  target is up and every rule evaluates without error: a renamed metric breaks this test,
  not a dashboard panel in production.
- Stopping the worker while probes are submitted fires NoWorkerConsuming for the stack's
  queue; a new worker resolves it and runs the probes.
- Killing memcached while the API server reads fires CacheBreakerOpen for that node; a
  memcached restarted on the same port resolves it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML is pinned in requirements.lock; its stubs are not
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as tpb
from agentic.tasks.v1 import tasks_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from devtools.prometheus import Prometheus, PrometheusConfig, write_drill_rules
from tests._identity import Role, authorized_channel, token
from tests._processes import (
    Memcached,
    Service,
    Worker,
    free_port,
    start_service,
    start_sidecar,
)
from tests._promql import (
    PROMETHEUS_SERIES,
    dashboard_expressions,
    exported_names,
    label_names,
    metric_names,
)
from tests._scrape import metrics_text
from tests._support import REPO, wait_for
from tests._task_rows import add_task
from tests.workers._stack import Stack, private_vhost, stack, submit

RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "agentic-backend.json"
POLICY = REPO / "cache_sidecar" / "namespaces.toml"
INTERVAL_SECONDS = 1.0
"""Scrape and evaluation interval, and every rule's shortened ``for``."""
JOBS = ("api", "cache-sidecar", "worker", "beat")
"""Scrape job names, as deploy/prometheus/prometheus.yml (compose) names them."""
TIMEOUT = 10.0
# NoWorkerConsuming needs about 8 s: the API server asks the broker every 5 s
# (server/tasks/_ops_metrics.REFRESH_SECONDS), then a scrape (1 s), an evaluation (1 s) and
# the shortened `for` (1 s). The bound leaves room for a loaded CI machine.
ALERT_TIMEOUT_SECONDS = 60.0
PROBES_PER_SECOND = 2.0
MAX_PROBES = 40

TARGET_LABELS = {"job", "instance"}
"""Labels Prometheus attaches to every scraped series."""
ABSENT_UNTIL_IT_HAPPENS = {
    # Counted only when a task attempt fails transiently: the probe kind fails permanently
    # or not at all, and no other kind fails transiently on demand. tests/workers/
    # test_worker_metrics.py drives that path through `execute` and counts it.
    "celery_task_retried_total": "no kind of this stack retries on demand",
    # Counted only for a message whose attempts kept losing their worker (kill -9 after
    # kill -9 past the delivery limit): far too slow for this module; test_worker_metrics
    # counts it.
    "agentic_task_dead_lettered_total": "needs a message redelivered past its limit",
}
"""Labelled metrics a process exports only once their event happened, which this module
cannot cause cheaply: allowed to be missing from the scrape, each with its reason. Each must
still be declared by the code (``tests._promql.exported_names``)."""


@dataclass
class Drill:
    """The stack under the drill and the Prometheus watching it."""

    tmp: Path
    stack: Stack
    memcached: Memcached
    sidecar: Service
    server: Service
    beat: Service
    prometheus: Prometheus
    metrics_ports: dict[str, int]
    tasks: tasks_pb2_grpc.TaskServiceStub
    projects: projects_pb2_grpc.ProjectServiceStub
    worker: Worker | None = None
    submitted: list[str] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return self.stack.env["AGENTIC_TASK_QUEUE"]

    def start_worker(self) -> Worker:
        """A worker again, on the port Prometheus scrapes."""
        self.worker = start_worker(self.stack, self.metrics_ports["worker"])
        return self.worker

    def stop_worker(self) -> None:
        assert self.worker is not None
        self.stack.workers.remove(self.worker)
        self.worker.stop()
        self.worker = None


def start_worker(s: Stack, metrics_port: int) -> Worker:
    """A worker of ``s`` serving its metrics on ``metrics_port`` (a fixed scrape target)."""
    return s.start_worker(AGENTIC_WORKER_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}")


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    tmp = tmp_path_factory.mktemp("drill")
    ports = {job: free_port() for job in JOBS}
    rules = write_drill_rules(RULES, tmp / "drill-rules.yml", for_seconds=INTERVAL_SECONDS)
    prometheus = Prometheus(
        PrometheusConfig(
            scrape_targets={job: [f"127.0.0.1:{port}"] for job, port in ports.items()},
            rule_files=[rules],
            workdir=tmp / "prometheus",
            scrape_interval_seconds=INTERVAL_SECONDS,
            evaluation_interval_seconds=INTERVAL_SECONDS,
        )
    )
    with ExitStack() as cleanup:
        vhost = cleanup.enter_context(private_vhost())
        # First: Prometheus hands new static targets to its scrapers after 5 s (its
        # discovery manager's update interval); that wait overlaps the stack's start-up.
        cleanup.enter_context(prometheus)
        memcached = Memcached(free_port(), tmp / "memcached.log")
        memcached.start()
        cleanup.callback(memcached.stop)
        sidecar = start_sidecar(
            tmp / "sidecar",
            [memcached],
            POLICY,
            {"AGENTIC_CACHE_METRICS_ADDRESS": f"127.0.0.1:{ports['cache-sidecar']}"},
        )
        cleanup.callback(sidecar.stop)
        s = cleanup.enter_context(stack(tmp, vhost, f"sqlite:///{tmp / 'drill.db'}"))
        s.start_server(
            AGENTIC_METRICS_ADDRESS=f"127.0.0.1:{ports['api']}",
            AGENTIC_CACHE_ADDRESS=sidecar.address,
            AGENTIC_CACHE_TIMEOUT_SECONDS="0.5",
            AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS="0.5",
            # The event relay (agentic_event_outbox_backlog) runs as in production.
            AGENTIC_EVENTS_ENABLED="true",
            AGENTIC_EVENTS_EXCHANGE=f"test.events.{uuid.uuid4().hex[:8]}",
        )
        server = s.servers[-1]
        worker = start_worker(s, ports["worker"])
        # The beat after the worker: its first probe finds a consumer.
        token_file = tmp / "beat.token"
        token_file.write_text(token("agentic-beat", (Role.SUPPORT_ENGINEER,)))
        beat = start_service(
            "workers.beat",
            {
                "DATABASE_URL": s.database_url,
                "AGENTIC_BEAT_API_ADDRESS": server.address,
                "AGENTIC_BEAT_TOKEN_FILE": str(token_file),
                # health_probe only, often enough to fire during the metric check.
                "AGENTIC_SCHEDULE": "health_probe=2s",
                "AGENTIC_BEAT_METRICS_ADDRESS": f"127.0.0.1:{ports['beat']}",
            },
            tmp / "beat",
        )
        cleanup.callback(beat.stop)
        channel = authorized_channel(server.address)
        cleanup.callback(channel.close)
        d = Drill(
            tmp=tmp,
            stack=s,
            memcached=memcached,
            sidecar=sidecar,
            server=server,
            beat=beat,
            prometheus=prometheus,
            metrics_ports=ports,
            tasks=tasks_pb2_grpc.TaskServiceStub(channel),
            projects=projects_pb2_grpc.ProjectServiceStub(channel),
            worker=worker,
        )
        yield d


# --- reading Prometheus ----------------------------------------------------------------


def matching(alerts: list[dict[str, Any]], name: str, **labels: str) -> list[dict[str, Any]]:
    """The alerts named ``name`` whose labels include ``labels``."""
    return [
        a
        for a in alerts
        if a["labels"].get("alertname") == name
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def await_alert(
    d: Drill,
    name: str,
    labels: dict[str, str],
    *,
    firing: bool,
    tick: Callable[[], None] = lambda: None,
    timeout: float = ALERT_TIMEOUT_SECONDS,
) -> float:
    """Wait until alert ``name`` with ``labels`` is firing (or, ``firing=False``, neither
    firing nor pending), calling ``tick`` between looks; the seconds it took."""
    seen: list[dict[str, Any]] = []
    started = time.monotonic()

    def reached() -> bool:
        tick()
        seen[:] = d.prometheus.alerts()
        found = matching(seen, name, **labels)
        return any(a["state"] == "firing" for a in found) if firing else not found

    want = "firing" if firing else "resolved"
    try:
        wait_for(reached, timeout=timeout, message=f"{name}{labels} to be {want}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; Prometheus's alerts: {json.dumps(seen, indent=1)}") from None
    return time.monotonic() - started


def scrape(port: int) -> dict[str, set[str]]:
    """Sample name -> the label names it carries, from one ``/metrics``."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics_text(port)):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def expressions() -> list[tuple[str, str]]:
    """(where, expression) of every alert rule and dashboard panel."""
    document = yaml.safe_load(RULES.read_text())
    found = [
        (f"alert {rule['alert']} ({RULES.name})", str(rule["expr"]))
        for group in document["groups"]
        for rule in group["rules"]
    ]
    found += [(f"dashboard {DASHBOARD.name}", expr) for expr in dashboard_expressions(DASHBOARD)]
    return found


def unexported(exprs: list[tuple[str, str]], exported: dict[str, set[str]]) -> list[str]:
    """What the expressions name that no scraped process exports, one line each."""
    problems = []
    for where, expr in exprs:
        names = metric_names(expr)
        carried = set(TARGET_LABELS)
        for name in sorted(names - PROMETHEUS_SERIES):
            if name in exported:
                carried |= exported[name]
            elif name not in ABSENT_UNTIL_IT_HAPPENS:
                problems.append(f"{where}: metric {name} is exported by no process: {expr!r}")
        # A process's own `job` label is renamed exported_job by Prometheus
        # (honor_labels: false), so it is there exactly when the metric carries `job`.
        if "job" in set().union(*(exported.get(n, set()) for n in names)):
            carried.add("exported_job")
        if names & set(ABSENT_UNTIL_IT_HAPPENS):
            continue  # its labels cannot be checked live
        problems += [
            f"{where}: label {label} is on none of its metrics {sorted(names)}: {expr!r}"
            for label in sorted(label_names(expr) - carried)
        ]
    return problems


# --- traffic ---------------------------------------------------------------------------


def traffic(d: Drill) -> None:
    """Calls and tasks that make every labelled series exist at least once."""
    # A project read twice: a cache miss (lease, origin load, fill), then a hit; an id
    # that does not exist, twice: a negative entry, then a negative hit.
    made = d.projects.CreateProject(
        ppb.CreateProjectRequest(project=ppb.Project(name=f"drill-{uuid.uuid4().hex[:8]}")),
        timeout=TIMEOUT,
    ).project
    missing = str(uuid.uuid4())
    for _ in range(2):
        d.projects.GetProject(ppb.GetProjectRequest(id=made.id), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as not_found:
            d.projects.GetProject(ppb.GetProjectRequest(id=missing), timeout=TIMEOUT)
        assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as invalid:
        d.projects.GetProject(ppb.GetProjectRequest(id=""), timeout=TIMEOUT)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Three 1 s probes on a pool of two: the third waits (agentic_task_oldest_pending_seconds
    # is exported only while a task is PENDING); one fails; one is cancelled while it runs.
    probes = [submit(d.tasks, steps=4, step_millis=250).id for _ in range(3)]
    failing = submit(d.tasks, steps=1, step_millis=1, fail_at_step=1).id
    cancelled = submit(d.tasks, steps=100, step_millis=50).id
    d.submitted += [*probes, failing, cancelled]

    def running() -> bool:
        task = d.tasks.GetTask(tpb.GetTaskRequest(id=cancelled), timeout=TIMEOUT).task
        return bool(task.state == tpb.TASK_STATE_RUNNING)

    wait_for(running, timeout=30, message=f"probe {cancelled} to run")
    d.tasks.CancelTask(tpb.CancelTaskRequest(id=cancelled), timeout=TIMEOUT)
    # A verified backup, as the backup kind leaves it (a real one is the backup tests' job).
    now = datetime.now(UTC)
    add_task(
        d.stack.db(),
        kind=tpb.TASK_KIND_BACKUP,
        state=tpb.TASK_STATE_SUCCEEDED,
        created=now,
        started=now,
        ended=now,
    )


def unfinished(d: Drill, ids: list[str]) -> dict[str, int]:
    """Task id -> state, for those of ``ids`` not yet ended."""
    terminal = {tpb.TASK_STATE_SUCCEEDED, tpb.TASK_STATE_FAILED, tpb.TASK_STATE_CANCELLED}
    states = {
        task_id: d.tasks.GetTask(tpb.GetTaskRequest(id=task_id), timeout=TIMEOUT).task.state
        for task_id in ids
    }
    return {task_id: state for task_id, state in states.items() if state not in terminal}


# --- the tests -------------------------------------------------------------------------


def test_rules_and_dashboard_name_only_what_the_running_stack_exports(drill: Drill) -> None:
    d = drill
    traffic(d)
    exprs = expressions()
    exported: dict[str, set[str]] = {}

    def complete() -> bool:
        # The union of every scrape since the traffic started: some series exist only for a
        # moment (a pending task's age) or after a background refresh (the broker figures).
        for port in d.metrics_ports.values():
            for name, labels in scrape(port).items():
                exported.setdefault(name, set()).update(labels)
        return not unexported(exprs, exported) and not unfinished(d, d.submitted)

    with suppress(AssertionError):  # the assertions below say what is missing
        wait_for(complete, timeout=30, message="every metric of the rules and dashboard")
    problems = unexported(exprs, exported)
    assert not problems, "\n".join(problems)
    assert not unfinished(d, d.submitted), "probes still not ended"

    # Allowed absences are still declared by the code under those names.
    undeclared = set(ABSENT_UNTIL_IT_HAPPENS) - exported_names()
    assert not undeclared, f"allowed to be absent but declared nowhere: {undeclared}"

    # Prometheus's side: every target up (`up` is its series), every rule evaluated cleanly.
    targets: list[dict[str, Any]] = []

    def all_up() -> bool:
        targets[:] = d.prometheus.targets()
        return sorted(t["labels"]["job"] for t in targets if t["health"] == "up") == sorted(JOBS)

    try:
        wait_for(all_up, timeout=15, message="every target up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {json.dumps(targets, indent=1)}") from None
    assert {r["metric"]["job"] for r in d.prometheus.query("up == 1")} == set(JOBS)
    rules: list[dict[str, Any]] = []

    def evaluated() -> bool:
        rules[:] = [rule for group in d.prometheus.rules() for rule in group["rules"]]
        return all(rule["health"] == "ok" for rule in rules)

    try:
        wait_for(evaluated, timeout=10, message="every rule evaluated without error")
    except AssertionError as exc:
        bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        raise AssertionError(f"{exc}: {bad}") from None
    assert len(rules) == sum(where.startswith("alert ") for where, _ in exprs)


def test_a_stopped_worker_fires_no_worker_consuming_and_a_new_one_resolves_it(
    drill: Drill,
) -> None:
    d = drill
    labels = {"queue_name": d.queue}
    # From a healthy start: Prometheus has seen the worker consume (the broker figures of
    # a moment before it did, with a probe already queued, are a real NoWorkerConsuming).
    consuming = f'celery_active_consumer_count{{queue_name="{d.queue}"}} > 0'
    wait_for(
        lambda: bool(d.prometheus.query(consuming)),
        timeout=ALERT_TIMEOUT_SECONDS,
        message=f"Prometheus to see {consuming}",
    )
    await_alert(d, "NoWorkerConsuming", labels, firing=False)
    d.stop_worker()
    probes: list[str] = []
    last = [0.0]

    def submit_some() -> None:
        now = time.monotonic()
        if len(probes) < MAX_PROBES and now - last[0] >= 1 / PROBES_PER_SECOND:
            last[0] = now
            probes.append(submit(d.tasks, steps=1, step_millis=1).id)

    try:
        fired = await_alert(d, "NoWorkerConsuming", labels, firing=True, tick=submit_some)
    finally:
        d.start_worker()
    resolved = await_alert(d, "NoWorkerConsuming", labels, firing=False)
    wait_for(
        lambda: not unfinished(d, probes),
        timeout=30,
        message=f"the {len(probes)} probes submitted while no worker ran to end",
    )
    states = {d.tasks.GetTask(tpb.GetTaskRequest(id=i), timeout=TIMEOUT).task.state for i in probes}
    assert states == {tpb.TASK_STATE_SUCCEEDED}
    print(f"NoWorkerConsuming fired after {fired:.1f}s, resolved {resolved:.1f}s after a restart")


def test_a_killed_memcached_fires_cache_breaker_open_and_its_restart_resolves_it(
    drill: Drill,
) -> None:
    d = drill
    labels = {"node": d.memcached.address}
    project = d.projects.CreateProject(
        ppb.CreateProjectRequest(project=ppb.Project(name=f"drill-{uuid.uuid4().hex[:8]}")),
        timeout=TIMEOUT,
    ).project
    await_alert(d, "CacheBreakerOpen", labels, firing=False)  # a healthy start
    reads = [0]
    max_reads = 2000  # at most ~10 reads per look at the alerts, for at most two minutes

    def read() -> None:
        # Reads keep going through the sidecar (its breaker needs failures to open and a
        # trial to close), and never fail: a missing cache costs time, not errors.
        if reads[0] < max_reads:
            reads[0] += 1
            got = d.projects.GetProject(ppb.GetProjectRequest(id=project.id), timeout=TIMEOUT)
            assert got.project.id == project.id

    d.memcached.kill()  # SIGKILL
    try:
        fired = await_alert(d, "CacheBreakerOpen", labels, firing=True, tick=read)
    finally:
        d.memcached.start()  # same port, empty
    resolved = await_alert(d, "CacheBreakerOpen", labels, firing=False, tick=read)
    print(f"CacheBreakerOpen fired after {fired:.1f}s, resolved {resolved:.1f}s after a restart")

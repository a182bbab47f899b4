"""``agentic rulesets ...`` and ``agentic admin ...``: reference data and the management RPCs."""

from __future__ import annotations

import argparse
from typing import Any

from agentic.admin.v1 import admin_pb2 as pb
from agentic.admin.v1 import admin_pb2_grpc
from agentic.compliance.v1 import rule_sets_pb2 as rpb
from agentic.compliance.v1 import rule_sets_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as tpb
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from rich.table import Table

from cli._errors import ExitCode
from cli._render import Column, enum_name, fmt_bytes, render_list, render_message
from cli._session import Session
from cli._tasks import wait_flags
from cli._watch import watch

__all__ = ["add_commands"]


def _admin(session: Session) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(session.channel)


def _rule_sets(session: Session) -> rule_sets_pb2_grpc.RuleSetServiceStub:
    return rule_sets_pb2_grpc.RuleSetServiceStub(session.channel)


def _items(
    session: Session, kind: str, title: str, items: Any, columns: list[Column], token: str = ""
) -> int:
    if session.output.json:
        for item in items:
            session.output.emit(kind, item)
        if token:
            session.output.emit("page", next_page_token=token)
        return ExitCode.OK
    render_list(session.output.out, title, items, columns)
    if token:
        session.output.note(f"more: --page-token {token}")
    return ExitCode.OK


def _one(session: Session, kind: str, title: str, message: Message) -> int:
    if session.output.json:
        session.output.emit(kind, message)
    else:
        render_message(session.output.out, title, message)
    return ExitCode.OK


def _seconds(duration: duration_pb2.Duration) -> str:
    return f"{duration.ToTimedelta().total_seconds():.3f} s"


# --- rule sets ------------------------------------------------------------------------


def _rulesets_list(session: Session, args: argparse.Namespace) -> int:
    request = rpb.ListRuleSetsRequest(page_size=args.page_size, page_token=args.page_token)
    response = session.call(_rule_sets(session).ListRuleSets, request)
    columns: list[Column] = [
        ("id", lambda r: r.id),
        ("name", lambda r: r.name),
        ("version", lambda r: r.version),
        ("built in", lambda r: "yes" if r.built_in else ""),
        ("processes", lambda r: len(r.processes)),
    ]
    return _items(
        session, "rule_set", "rule sets", response.rule_sets, columns, response.next_page_token
    )


def _rulesets_get(session: Session, args: argparse.Namespace) -> int:
    rule_set = session.call(
        _rule_sets(session).GetRuleSet, rpb.GetRuleSetRequest(id=args.id)
    ).rule_set
    if session.output.json:
        session.output.emit("rule_set", rule_set)
        return ExitCode.OK
    console = session.output.out
    console.print(f"{rule_set.name} {rule_set.version} ({rule_set.id}) {rule_set.source}")
    table = Table(title="processes", title_justify="left")
    for header in ("process", "name", "work products", "checks"):
        table.add_column(header)
    for process in rule_set.processes:
        table.add_row(
            process.id,
            process.name,
            "\n".join(f"{w.id} {w.name}" for w in process.work_products),
            "\n".join(rpb.Check.Name(c).removeprefix("CHECK_") for c in process.checks),
        )
    console.print(table)
    return ExitCode.OK


# --- admin ----------------------------------------------------------------------------


def _stats(session: Session, args: argparse.Namespace) -> int:
    request = pb.GetTaskStatsRequest()
    if args.window is not None:
        request.window.FromSeconds(args.window)
    response = session.call(_admin(session).GetTaskStats, request)
    if session.output.json:
        session.output.emit("task_stats", response)
        return ExitCode.OK
    console = session.output.out
    render_list(
        console,
        "tasks by kind and state",
        response.counts,
        [
            ("kind", lambda c: enum_name(c, "kind")),
            ("state", lambda c: enum_name(c, "state")),
            ("count", lambda c: c.count),
        ],
    )
    render_list(
        console,
        f"timings since {response.window_start.ToJsonString()}",
        response.timings,
        [
            ("kind", lambda t: enum_name(t, "kind")),
            ("started", lambda t: t.started),
            ("queue p50", lambda t: _seconds(t.queue_wait_p50)),
            ("queue p95", lambda t: _seconds(t.queue_wait_p95)),
            ("ended", lambda t: t.ended),
            ("run p50", lambda t: _seconds(t.run_time_p50)),
            ("run p95", lambda t: _seconds(t.run_time_p95)),
        ],
    )
    render_list(
        console,
        "queues",
        response.queues,
        [
            ("queue", lambda q: q.queue),
            ("reachable", lambda q: "yes" if q.reachable else f"no: {q.error}"),
            ("messages", lambda q: q.messages),
            ("consumers", lambda q: q.consumers),
        ],
    )
    if response.HasField("oldest_pending_age"):
        console.print(f"oldest pending task: {_seconds(response.oldest_pending_age)}")
    return ExitCode.OK


def _run_job(session: Session, args: argparse.Namespace) -> int:
    task = session.call(_admin(session).RunJob, pb.RunJobRequest(job=args.name)).task
    if not args.wait:
        return _one(session, "task", f"task {task.id}", task)
    session.output.emit("task", task)
    session.output.note(f"job {args.name}: task {task.id}")
    return watch(session, task.id, timeout_seconds=args.timeout)


def _backups(session: Session, args: argparse.Namespace) -> int:
    response = session.call(_admin(session).ListBackups, pb.ListBackupsRequest())
    if not session.output.json:
        session.output.note(f"destination: {response.destination}")
    return _items(
        session,
        "backup",
        "backups",
        response.backups,
        [
            ("id", lambda b: b.id),
            ("created", lambda b: b.create_time.ToJsonString()),
            ("database", lambda b: b.database),
            ("revision", lambda b: b.alembic_revision),
            ("files", lambda b: b.files),
            ("size", lambda b: fmt_bytes(b.bytes)),
            ("verified", lambda b: b.verify_time.ToJsonString() if b.verified else "no"),
        ],
    )


def _cache_stats(session: Session, args: argparse.Namespace) -> int:
    response = session.call(_admin(session).GetCacheStats, pb.GetCacheStatsRequest())
    if session.output.json:
        session.output.emit("cache_stats", response)
        return ExitCode.OK
    if not response.cache_enabled:
        session.output.note("the server runs without a cache sidecar")
    console = session.output.out
    render_list(
        console,
        "namespaces",
        response.namespaces,
        [
            ("namespace", lambda n: n.namespace),
            ("hits", lambda n: n.hits),
            ("misses", lambda n: n.misses),
            ("hit ratio", lambda n: f"{n.hit_ratio:.1%}"),
            ("lease waits", lambda n: n.lease_waits),
            ("fills", lambda n: n.fills_stored),
            ("clears", lambda n: n.namespace_clears),
        ],
    )
    render_list(
        console,
        "nodes",
        response.nodes,
        [
            ("address", lambda n: n.address),
            ("breaker", lambda n: enum_name(n, "breaker_state")),
            ("reachable", lambda n: "yes" if n.reachable else "no"),
            ("items", lambda n: n.items),
            ("size", lambda n: fmt_bytes(n.bytes)),
            ("evictions", lambda n: n.evictions),
        ],
    )
    return ExitCode.OK


def _cache_keys(session: Session, args: argparse.Namespace) -> int:
    request = pb.ListCacheKeysRequest(
        namespace=args.namespace, page_size=args.page_size, page_token=args.page_token
    )
    response = session.call(_admin(session).ListCacheKeys, request)
    if not response.cache_enabled:
        session.output.note("the server runs without a cache sidecar")
    return _items(
        session,
        "cached_key",
        f"keys of {args.namespace}",
        response.keys,
        [
            ("key", lambda k: k.key + (" (hashed)" if k.hashed else "")),
            ("node", lambda k: k.node),
            ("size", lambda k: fmt_bytes(k.size_bytes)),
            (
                "expires",
                lambda k: k.expire_time.ToJsonString() if k.HasField("expire_time") else "",
            ),
        ],
        response.next_page_token,
    )


def _cache_clear(session: Session, args: argparse.Namespace) -> int:
    request = pb.ClearCacheNamespaceRequest(namespace=args.namespace)
    response = session.call(_admin(session).ClearCacheNamespace, request)
    return _one(session, "cache_clear", f"clear {args.namespace}", response)


def _cache_warm(session: Session, args: argparse.Namespace) -> int:
    task = session.call(
        _admin(session).WarmCache, pb.WarmCacheRequest(namespaces=args.namespace)
    ).task
    if not args.wait:
        return _one(session, "task", f"task {task.id}", task)
    session.output.emit("task", task)
    return watch(session, task.id, timeout_seconds=args.timeout)


def _purge(session: Session, args: argparse.Namespace) -> int:
    request = pb.PurgeTasksRequest(
        states=[tpb.TaskState.Value(f"TASK_STATE_{s.upper()}") for s in args.state],
        dry_run=args.dry_run,
        batch_size=args.batch_size,
    )
    request.older_than.FromSeconds(args.older_than)
    return _one(session, "purge", "purge", session.call(_admin(session).PurgeTasks, request))


def _audit(session: Session, args: argparse.Namespace) -> int:
    request = pb.ListAuditEventsRequest(page_size=args.page_size, page_token=args.page_token)
    response = session.call(_admin(session).ListAuditEvents, request)
    return _items(
        session,
        "audit_event",
        "audit events",
        response.audit_events,
        [
            ("time", lambda e: e.time.ToJsonString()),
            ("subject", lambda e: e.subject),
            ("action", lambda e: e.action),
            ("outcome", lambda e: e.outcome),
        ],
        response.next_page_token,
    )


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=int, default=0, metavar="N")
    parser.add_argument("--page-token", default="", metavar="TOKEN")


def add_commands(commands: Any) -> None:
    """Add ``rulesets ...`` and ``admin ...`` to the top-level subcommands."""
    rulesets = commands.add_parser("rulesets", help="the compliance rule sets")
    rs = rulesets.add_subparsers(dest="rulesets_command", required=True, metavar="COMMAND")
    rs_list = rs.add_parser("list", help="built-in first, then custom ones")
    _paging(rs_list)
    rs_list.set_defaults(run=_rulesets_list)
    rs_get = rs.add_parser("get", help="one rule set with its processes")
    rs_get.add_argument("id")
    rs_get.set_defaults(run=_rulesets_get)

    admin = commands.add_parser("admin", help="management RPCs (Administrators)")
    sub = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")

    stats = sub.add_parser("stats", help="task counts, timings and queue depths")
    stats.add_argument("--window", type=int, metavar="S", help="timings over S seconds (1 h)")
    stats.set_defaults(run=_stats)

    jobs = sub.add_parser("jobs", help="the periodic jobs").add_subparsers(
        dest="jobs_command", required=True, metavar="COMMAND"
    )
    run = jobs.add_parser("run", help="run a job now")
    run.add_argument("name", help="retention, cache_warm, backup or health_probe")
    wait_flags(run)
    run.set_defaults(run=_run_job)

    backups = sub.add_parser("backups", help="backups").add_subparsers(
        dest="backups_command", required=True, metavar="COMMAND"
    )
    backups.add_parser("list", help="complete backups, newest first").set_defaults(run=_backups)

    cache = sub.add_parser("cache", help="the cache").add_subparsers(
        dest="cache_command", required=True, metavar="COMMAND"
    )
    cache.add_parser("stats", help="per namespace and node").set_defaults(run=_cache_stats)
    keys = cache.add_parser("keys", help="keys a namespace holds")
    keys.add_argument("namespace")
    _paging(keys)
    keys.set_defaults(run=_cache_keys)
    clear = cache.add_parser("clear", help="drop every key of a namespace")
    clear.add_argument("namespace")
    clear.set_defaults(run=_cache_clear)
    warm = cache.add_parser("warm", help="load namespaces (a cache_warm task)")
    warm.add_argument("namespace", nargs="*", help="default: every one with a warm rule")
    wait_flags(warm)
    warm.set_defaults(run=_cache_warm)

    purge = sub.add_parser("purge", help="delete old terminal tasks")
    purge.add_argument("--older-than", type=int, required=True, metavar="S")
    purge.add_argument(
        "--state", action="append", default=[], choices=["succeeded", "failed", "cancelled"]
    )
    purge.add_argument("--dry-run", action="store_true", help="count only")
    purge.add_argument("--batch-size", type=int, default=0, metavar="N")
    purge.set_defaults(run=_purge)

    audit = sub.add_parser("audit", help="the audit log, newest first")
    _paging(audit)
    audit.set_defaults(run=_audit)

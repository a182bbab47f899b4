"""``agentic tasks ...``: submit each kind (``--wait`` watches it, see ``cli._watch``), get,
list, cancel, retry, and the argument syntax of the analytics query."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from typing import Any

from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.tasks.v1 import analytics_pb2 as anpb
from agentic.tasks.v1 import compliance_report_pb2 as cpb
from agentic.tasks.v1 import datasets_pb2 as dpb
from agentic.tasks.v1 import profile_dataset_pb2 as ppb
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.protobuf import struct_pb2

from cli._errors import ExitCode, UsageError
from cli._render import TASK_COLUMNS, enum_name, render_list
from cli._session import Session
from cli._transfer import download_to
from cli._watch import show_task, watch

__all__ = ["add_commands", "parse_filter", "parse_measure", "parse_time_bucket", "wait_flags"]

_PRIORITIES = {"low": pb.PRIORITY_LOW, "normal": pb.PRIORITY_NORMAL, "high": pb.PRIORITY_HIGH}


def _stub(session: Session) -> tasks_pb2_grpc.TaskServiceStub:
    return tasks_pb2_grpc.TaskServiceStub(session.channel)


# --- submitting -----------------------------------------------------------------------


def _common(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": args.request_id or str(uuid.uuid4()),
        "owner_id": args.owner or "",
        "priority": _PRIORITIES[args.priority] if args.priority else pb.PRIORITY_UNSPECIFIED,
    }
    if args.project:
        fields["project_id"] = args.project
    return fields


def _submitted(session: Session, args: argparse.Namespace, task: pb.Task) -> int:
    if not args.wait:
        show_task(session, task)
        return ExitCode.OK
    session.output.emit("task", task)
    if not session.output.json:
        session.output.note(f"submitted task {task.id} ({enum_name(task, 'kind')})")
    code = watch(session, task.id, timeout_seconds=args.timeout)
    if code == ExitCode.OK and getattr(args, "save", None):
        _save_report(session, task.id, args.save)
    return code


def _save_report(session: Session, task_id: str, path: str) -> None:
    task = session.call(_stub(session).GetTask, pb.GetTaskRequest(id=task_id)).task
    outcome = task.WhichOneof("outcome")
    if outcome == "profile_dataset_result":
        artifact_id = task.profile_dataset_result.report_artifact_id
    elif outcome == "analytics_result":
        artifact_id = task.analytics_result.csv_artifact_id
    elif outcome == "compliance_report_result":
        result = task.compliance_report_result
        html = path.endswith((".html", ".htm"))
        artifact_id = result.html_artifact_id if html else result.pdf_artifact_id
    else:
        raise UsageError(f"a {outcome} has no report to save")
    download_to(session, artifact_id, path, overwrite=True)


def _probe(session: Session, args: argparse.Namespace) -> int:
    request = pb.SubmitProbeRequest(
        **_common(args),
        probe=pb.ProbeSpec(
            steps=args.steps, step_millis=args.step_millis, fail_at_step=args.fail_at_step
        ),
    )
    return _submitted(session, args, session.call(_stub(session).SubmitProbe, request).task)


def _verify(session: Session, args: argparse.Namespace) -> int:
    request = pb.SubmitVerifyArtifactRequest(
        **_common(args),
        verify_artifact=pb.VerifyArtifactSpec(artifact=apb.ArtifactRef(artifact_id=args.artifact)),
    )
    task = session.call(_stub(session).SubmitVerifyArtifact, request).task
    return _submitted(session, args, task)


def _profile(session: Session, args: argparse.Namespace) -> int:
    request = pb.SubmitProfileDatasetRequest(
        **_common(args),
        profile_dataset=ppb.ProfileDatasetSpec(
            dataset=apb.ArtifactRef(artifact_id=args.dataset),
            top_k=args.top_k,
            histogram_bins=args.histogram_bins,
        ),
    )
    task = session.call(_stub(session).SubmitProfileDataset, request).task
    return _submitted(session, args, task)


def parse_value(text: str) -> dpb.Value:
    """A literal of a filter: an integer, a number, true/false, null, else a string."""
    if text == "null":
        return dpb.Value(null_value=struct_pb2.NULL_VALUE)
    if text in ("true", "false"):
        return dpb.Value(bool_value=text == "true")
    try:
        return dpb.Value(int_value=int(text))
    except ValueError:
        pass
    try:
        return dpb.Value(double_value=float(text))
    except ValueError:
        return dpb.Value(string_value=text)


# Longest operators first, so that "<=" is not read as "<" followed by "=...".
_OPERATORS = [
    ("!=", anpb.FILTER_OPERATOR_NE),
    ("<=", anpb.FILTER_OPERATOR_LE),
    (">=", anpb.FILTER_OPERATOR_GE),
    ("=", anpb.FILTER_OPERATOR_EQ),
    ("<", anpb.FILTER_OPERATOR_LT),
    (">", anpb.FILTER_OPERATOR_GT),
]


def parse_filter(text: str) -> anpb.Filter:
    """``COL=V``, ``COL!=V``, ``COL<V`` (``<=``, ``>``, ``>=``), ``COL~in~A,B,C``,
    ``COL~null``, ``COL~notnull``."""
    if "~" in text:
        column, _, rest = text.partition("~")
        op, _, values = rest.partition("~")
        if op == "in":
            return anpb.Filter(
                column=column,
                operator=anpb.FILTER_OPERATOR_IN,
                values=[parse_value(v) for v in values.split(",")],
            )
        if op == "null" and not values:
            return anpb.Filter(column=column, operator=anpb.FILTER_OPERATOR_IS_NULL)
        if op == "notnull" and not values:
            return anpb.Filter(column=column, operator=anpb.FILTER_OPERATOR_IS_NOT_NULL)
        raise argparse.ArgumentTypeError(f"unknown filter form {text!r}")
    for symbol, operator in _OPERATORS:
        column, found, value = text.partition(symbol)
        if found and column:
            return anpb.Filter(column=column, operator=operator, value=parse_value(value))
    raise argparse.ArgumentTypeError(f"not a filter: {text!r} (COL=VALUE, COL<VALUE, ...)")


def _enum_value(enum: Any, prefix: str, text: str) -> int:
    """The number of ``prefix + TEXT`` in ``enum`` (``-`` read as ``_``), or a usage error
    listing the choices."""
    names = list(enum.keys())  # an EnumTypeWrapper has no __contains__
    name = prefix + text.upper().replace("-", "_")
    if name not in names or name.endswith("_UNSPECIFIED"):
        choices = ", ".join(k.removeprefix(prefix).lower() for k in names[1:])
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {choices}")
    return int(enum.Value(name))


def parse_measure(text: str) -> anpb.Measure:
    """``FUNCTION[:COLUMN][=ALIAS]``, e.g. ``count``, ``p95:effort_hours=p95_effort``."""
    spec, _, alias = text.partition("=")
    function, _, column = spec.partition(":")
    number = _enum_value(anpb.MeasureFunction, "MEASURE_FUNCTION_", function)
    return anpb.Measure(function=anpb.MeasureFunction.ValueType(number), column=column, alias=alias)


def parse_time_bucket(text: str) -> anpb.TimeBucket:
    """``COLUMN:hour|day|week|month``."""
    column, _, granularity = text.partition(":")
    if not column:
        raise argparse.ArgumentTypeError(f"not a time bucket: {text!r} (COLUMN:week, ...)")
    number = _enum_value(anpb.TimeGranularity, "TIME_GRANULARITY_", granularity)
    return anpb.TimeBucket(column=column, granularity=anpb.TimeGranularity.ValueType(number))


def _order(text: str) -> anpb.OrderBy:
    return anpb.OrderBy(column=text.lstrip("-"), descending=text.startswith("-"))


def _analytics(session: Session, args: argparse.Namespace) -> int:
    spec = anpb.AnalyticsSpec(
        dataset=apb.ArtifactRef(artifact_id=args.dataset),
        group_by=args.group_by,
        measures=args.measure,
        filters=args.filter,
        order_by=[_order(o) for o in args.order_by],
        limit=args.limit,
    )
    if args.time_bucket is not None:
        spec.time_bucket.CopyFrom(args.time_bucket)
    request = pb.SubmitAnalyticsRequest(**_common(args), analytics=spec)
    return _submitted(session, args, session.call(_stub(session).SubmitAnalytics, request).task)


def _compliance(session: Session, args: argparse.Namespace) -> int:
    spec = cpb.ComplianceReportSpec(rule_set_id=args.rule_set)
    if args.traceability:
        spec.traceability.CopyFrom(apb.ArtifactRef(artifact_id=args.traceability))
    request = pb.SubmitComplianceReportRequest(**_common(args), compliance_report=spec)
    task = session.call(_stub(session).SubmitComplianceReport, request).task
    return _submitted(session, args, task)


# --- the other task commands ----------------------------------------------------------


def _watch(session: Session, args: argparse.Namespace) -> int:
    return watch(session, args.id, timeout_seconds=args.timeout, after_sequence=args.after)


def _get(session: Session, args: argparse.Namespace) -> int:
    show_task(session, session.call(_stub(session).GetTask, pb.GetTaskRequest(id=args.id)).task)
    return ExitCode.OK


def _enum_arg(enum: Any, prefix: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        return _enum_value(enum, prefix, text)

    parse.__name__ = prefix.lower().rstrip("_")
    return parse


def _list(session: Session, args: argparse.Namespace) -> int:
    request = pb.ListTasksRequest(
        page_size=args.page_size,
        page_token=args.page_token,
        state=pb.TaskState.ValueType(args.state or 0),
        kind=pb.TaskKind.ValueType(args.kind or 0),
        owner_id=args.owner or "",
    )
    response = session.call(_stub(session).ListTasks, request)
    if session.output.json:
        for task in response.tasks:
            session.output.emit("task", task)
        if response.next_page_token:
            session.output.emit("page", next_page_token=response.next_page_token)
        return ExitCode.OK
    render_list(session.output.out, "tasks", response.tasks, TASK_COLUMNS)
    if response.next_page_token:
        session.output.note(f"more: --page-token {response.next_page_token}")
    return ExitCode.OK


def _cancel(session: Session, args: argparse.Namespace) -> int:
    task = session.call(_stub(session).CancelTask, pb.CancelTaskRequest(id=args.id)).task
    return _show_or_watch(session, task, args)


def _retry(session: Session, args: argparse.Namespace) -> int:
    task = session.call(_stub(session).RetryTask, pb.RetryTaskRequest(id=args.id)).task
    return _show_or_watch(session, task, args)


def _show_or_watch(session: Session, task: pb.Task, args: argparse.Namespace) -> int:
    """After an operator action: the task as it is now, or (``--wait``) watched to its end."""
    if not args.wait:
        show_task(session, task)
        return ExitCode.OK
    session.output.emit("task", task)
    # The events from the one that made this state on: an earlier attempt's terminal
    # event would otherwise end the watch at once.
    since = max(0, task.last_sequence - 1)
    return watch(session, task.id, timeout_seconds=args.timeout, after_sequence=since)


# --- argparse -------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def wait_flags(parser: argparse.ArgumentParser) -> None:
    """``--wait`` and ``--timeout S`` of a command that starts a task."""
    parser.add_argument("--wait", action="store_true", help="watch until the task ends")
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="S",
        help="give up waiting after S seconds (exit 3; the task keeps running)",
    )


def _submit_flags(parser: argparse.ArgumentParser, *, project_required: bool) -> None:
    parser.add_argument(
        "--project", required=project_required, metavar="ID", help="the task's project"
    )
    parser.add_argument("--request-id", metavar="UUID", help="idempotency key (default: new)")
    parser.add_argument("--owner", metavar="ID", help="submit for another owner (admins)")
    parser.add_argument("--priority", choices=sorted(_PRIORITIES), help="default: normal")
    wait_flags(parser)


def add_commands(commands: Any) -> None:
    """Add ``tasks ...`` to the top-level subcommands."""
    tasks = commands.add_parser("tasks", help="submit, watch and manage tasks")
    sub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")

    submit = sub.add_parser("submit", help="submit a task of a kind")
    kinds = submit.add_subparsers(dest="kind", required=True, metavar="KIND")

    probe = kinds.add_parser("probe", help="a synthetic end-to-end check")
    probe.add_argument("--steps", type=int, default=5, metavar="N", help="default 5")
    probe.add_argument("--step-millis", type=int, default=200, metavar="M", help="default 200")
    probe.add_argument("--fail-at-step", type=int, default=0, metavar="K", help="fail at step K")
    _submit_flags(probe, project_required=False)
    probe.set_defaults(run=_probe)

    verify = kinds.add_parser("verify", help="re-hash a stored artifact")
    verify.add_argument("--artifact", required=True, metavar="ID")
    _submit_flags(verify, project_required=True)
    verify.set_defaults(run=_verify)

    profile = kinds.add_parser("profile", help="statistics of a dataset artifact")
    profile.add_argument("--dataset", required=True, metavar="ID", help="a READY dataset")
    profile.add_argument("--top-k", type=int, default=0, metavar="K", help="most frequent values")
    profile.add_argument("--histogram-bins", type=int, default=0, metavar="B")
    profile.add_argument("--save", metavar="FILE", help="download the HTML report here")
    _submit_flags(profile, project_required=True)
    profile.set_defaults(run=_profile)

    analytics = kinds.add_parser("analytics", help="a typed group-by query over a dataset")
    analytics.add_argument("--dataset", required=True, metavar="ID")
    analytics.add_argument("--group-by", action="append", default=[], metavar="COL")
    analytics.add_argument(
        "--time-bucket", type=parse_time_bucket, metavar="COL:GRAIN", help="hour|day|week|month"
    )
    analytics.add_argument(
        "--measure",
        action="append",
        type=parse_measure,
        default=[],
        metavar="FN[:COL][=ALIAS]",
        help="count, count_distinct, sum, avg, min, max, p50, p95",
    )
    analytics.add_argument(
        "--filter",
        action="append",
        type=parse_filter,
        default=[],
        metavar="EXPR",
        help="COL=V, COL!=V, COL<V, COL<=V, COL>V, COL>=V, COL~in~A,B, COL~null, COL~notnull",
    )
    analytics.add_argument(
        "--order-by", action="append", default=[], metavar="[-]COL", help="- for descending"
    )
    analytics.add_argument("--limit", type=int, default=0, metavar="N", help="0: no limit")
    analytics.add_argument("--save", metavar="FILE", help="download the whole table as CSV")
    _submit_flags(analytics, project_required=True)
    analytics.set_defaults(run=_analytics)

    compliance = kinds.add_parser("compliance", help="an ASPICE compliance report")
    compliance.add_argument("--rule-set", default="", metavar="ID", help="default aspice-3.1")
    compliance.add_argument("--traceability", metavar="ID", help="a traceability export")
    compliance.add_argument(
        "--save", metavar="FILE", help="download the report (PDF; HTML when FILE ends .html)"
    )
    _submit_flags(compliance, project_required=True)
    compliance.set_defaults(run=_compliance)

    watch_cmd = sub.add_parser("watch", help="follow a task with a live progress bar")
    watch_cmd.add_argument("id")
    watch_cmd.add_argument("--after", type=int, default=0, metavar="SEQ", help="skip events")
    watch_cmd.add_argument("--timeout", type=_positive_seconds, metavar="S", help="exit 3 after S")
    watch_cmd.set_defaults(run=_watch)

    get = sub.add_parser("get", help="one task with its result")
    get.add_argument("id")
    get.set_defaults(run=_get)

    list_cmd = sub.add_parser("list", help="tasks, newest first")
    list_cmd.add_argument("--state", type=_enum_arg(pb.TaskState, "TASK_STATE_"))
    list_cmd.add_argument("--kind", type=_enum_arg(pb.TaskKind, "TASK_KIND_"))
    list_cmd.add_argument("--owner", metavar="ID")
    list_cmd.add_argument("--page-size", type=int, default=0, metavar="N")
    list_cmd.add_argument("--page-token", default="", metavar="TOKEN")
    list_cmd.set_defaults(run=_list)

    cancel = sub.add_parser("cancel", help="cancel a task")
    cancel.add_argument("id")
    wait_flags(cancel)
    cancel.set_defaults(run=_cancel)

    retry = sub.add_parser("retry", help="run a FAILED or CANCELLED task again")
    retry.add_argument("id")
    wait_flags(retry)
    retry.set_defaults(run=_retry)

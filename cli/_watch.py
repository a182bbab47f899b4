"""Following a task: ``WatchTask`` to the end, with a live progress bar or JSON lines.

Every event after the last sequence seen is shown once, in order. When the stream breaks
(a server restart, a lost connection) the watch reconnects from that sequence, so nothing
is shown twice or missed, waiting by the one backoff policy of the code base
(``core.backoff``: exponential, full jitter), at most ``MAX_RECONNECTS`` times in a row;
then the last error ends the command (UNAVAILABLE: exit 4).
"""

from __future__ import annotations

import time
from datetime import UTC

import grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cli._errors import ExitCode
from cli._render import enum_name, render_task
from cli._session import Session
from core.backoff import Backoff

__all__ = ["MAX_RECONNECTS", "RECONNECT", "show_task", "watch"]

RECONNECT = Backoff(first_seconds=0.25, max_seconds=8.0)
"""Waits between reconnects of a broken watch stream."""
MAX_RECONNECTS = 8
"""Reconnects in a row without an event before the CLI gives up with the last error (exit 4
for UNAVAILABLE, and for a server that keeps ending the stream early)."""

# Codes of a broken stream rather than a refused request: reconnect from the last sequence.
_TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL}
)

_TERMINAL_EXIT = {
    pb.TASK_STATE_SUCCEEDED: ExitCode.OK,
    pb.TASK_STATE_FAILED: ExitCode.FAILED,
    pb.TASK_STATE_CANCELLED: ExitCode.CANCELLED,
}


class _WatchView:
    """Where a watch shows its events: a live bar on stderr, or JSON lines on stdout."""

    def __init__(self, session: Session, task_id: str) -> None:
        self._output = session.output
        self._task_id = task_id
        self._state: int | None = None
        self._attempt = 0
        self._progress: Progress | None = None
        self._bar: TaskID | None = None
        if not self._output.json:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                console=self._output.err,
            )

    def __enter__(self) -> _WatchView:
        if self._progress is not None:
            self._progress.start()
            self._bar = self._progress.add_task(f"task {self._task_id[:8]}", total=1.0, note="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def event(self, event: pb.TaskEvent) -> None:
        """Show one event: a line per state change, the bar moved to its progress."""
        self._output.emit("event", event)
        if self._progress is None or self._bar is None:
            return
        if event.state != self._state or event.attempt != self._attempt:
            self._state, self._attempt = event.state, event.attempt
            when = event.time.ToDatetime(tzinfo=UTC).astimezone().strftime("%H:%M:%S")
            state = enum_name(event, "state")
            self._progress.console.print(
                f"{when} {state} (attempt {event.attempt})", markup=False, highlight=False
            )
        self._progress.update(
            self._bar,
            completed=max(0.0, min(1.0, event.progress.fraction)),
            description=enum_name(event, "state"),
            note=event.progress.message,
        )

    def note(self, text: str) -> None:
        """A line above the bar (or on stderr)."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self._output.note(text)


def watch(
    session: Session, task_id: str, *, timeout_seconds: float | None, after_sequence: int = 0
) -> int:
    """Follow a task to its end; the exit code of its terminal state (3 on ``--timeout``)."""
    stub = tasks_pb2_grpc.TaskServiceStub(session.channel)
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    last_sequence = after_sequence
    last_state = pb.TASK_STATE_UNSPECIFIED
    delays = RECONNECT.delays()
    failures = 0
    final: pb.Task | None = None
    with _WatchView(session, task_id) as view:
        while final is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            request = pb.WatchTaskRequest(id=task_id, after_sequence=last_sequence)
            try:
                for item in session.stream(stub.WatchTask, request, remaining):
                    if not item.HasField("event"):
                        continue  # a heartbeat: the stream is alive
                    event = item.event
                    last_sequence, last_state = event.sequence, event.state
                    failures, delays = 0, RECONNECT.delays()
                    view.event(event)
                    if event.terminal:
                        final = event.task
                        break
                if final is not None:
                    break
                why = "the stream ended before the task did"
                if failures >= MAX_RECONNECTS:
                    view.note(f"{why}, {failures + 1} times in a row; giving up")
                    return ExitCode.UNREACHABLE
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                    break
                if error.code() not in _TRANSIENT or failures >= MAX_RECONNECTS:
                    raise
                why = f"the stream broke ({error.code().name})"
            failures += 1
            wait = next(delays)
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            view.note(f"{why}; reconnecting from sequence {last_sequence} in {wait:.1f} s")
            time.sleep(wait)
    if final is None:
        state = pb.TaskState.Name(last_state).removeprefix("TASK_STATE_")
        where = f"is {state}" if last_state else "sent no event yet"
        session.output.note(
            f"timed out after {timeout_seconds:g} s; task {task_id} {where} and keeps running"
        )
        session.output.emit("timeout", task_id=task_id, timeout_seconds=timeout_seconds)
        return ExitCode.TIMED_OUT
    show_task(session, final)
    return _TERMINAL_EXIT.get(final.state, ExitCode.FAILED)


def show_task(session: Session, task: pb.Task) -> None:
    """A task as a table with its result, or one JSON line."""
    if session.output.json:
        session.output.emit("task", task)
    else:
        render_task(session.output.out, task)

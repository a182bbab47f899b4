"""WatchTask watchers: event latency with many open streams, and a reconnect storm.

A ``Watcher`` follows one task over one stream at a time and keeps every sequence
number it received, so gaps and repeats across reconnects can be checked at the end.
All watchers run as coroutines on the benchmark's event loop, spread over a few
channels; each channel is its own HTTP/2 connection (local subchannel pool), so closing
a channel drops its streams the way a lost connection would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc

from devtools.measure import error_name
from tests._identity import authorized_aio_channel

__all__ = [
    "Channels",
    "LatencyWindow",
    "Watcher",
    "follow_all",
    "sequence_faults",
    "wait_first_items",
]

_CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    # One connection per channel: watchers spread over several, and closing one drops
    # exactly its streams.
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass
class LatencyWindow:
    """Events whose own time falls in [start, end) count (wall-clock seconds)."""

    start: float = float("inf")
    end: float = float("inf")
    latencies_ms: list[float] = field(default_factory=list)

    def open(self) -> None:
        """Count events written from now on."""
        self.start = time.time()
        self.end = float("inf")

    def close(self) -> None:
        """Stop counting events written from now on."""
        self.end = time.time()


@dataclass
class Watcher:
    """One client following one task, over one or more streams in turn."""

    task_id: str
    sequences: list[int] = field(default_factory=list)
    streams: int = 0
    first_item_at: float | None = None
    """``time.monotonic()`` of the first item of the current stream."""
    first_item: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    """The last stream ended normally (after the terminal event)."""
    terminal_sequence: int | None = None
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def last(self) -> int:
        """The last sequence received (0 before any)."""
        return self.sequences[-1] if self.sequences else 0

    def begin_stream(self) -> None:
        """Forget the previous stream's first item; before ``follow`` is scheduled, so a
        waiter that starts at once waits for the new stream."""
        self.streams += 1
        self.first_item_at = None
        self.first_item.clear()

    async def follow(
        self,
        stub: Any,
        *,
        window: LatencyWindow | None,
        timeout_seconds: float,
    ) -> None:
        """One stream from ``last`` on, until it ends, fails or is dropped (call
        ``begin_stream`` first)."""
        request = pb.WatchTaskRequest(id=self.task_id, after_sequence=self.last)
        try:
            async for item in stub.WatchTask(request, timeout=timeout_seconds):
                received = time.time()
                if self.first_item_at is None:
                    self.first_item_at = time.monotonic()
                    self.first_item.set()
                if not item.HasField("event"):
                    continue  # a heartbeat
                event = item.event
                self.sequences.append(event.sequence)
                if event.terminal:
                    self.terminal_sequence = event.sequence
                if window is not None:
                    written = event.time.seconds + event.time.nanos / 1e9
                    if window.start <= written < window.end:
                        window.latencies_ms.append((received - written) * 1000.0)
            self.ended = True
        except asyncio.CancelledError:
            # grpc.aio reports a call cancelled from our side (its channel closed) as a
            # CancelledError; only swallow it when this coroutine itself is not cancelled.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            self.errors["dropped"] = self.errors.get("dropped", 0) + 1
        except grpc.aio.AioRpcError as exc:
            name = error_name(exc)
            self.errors[name] = self.errors.get(name, 0) + 1


class Channels:
    """A few grpc.aio channels to one server; stubs handed out round robin."""

    def __init__(self, address: str, count: int) -> None:
        self._channels = [
            authorized_aio_channel(address, options=_CHANNEL_OPTIONS) for _ in range(count)
        ]
        self.stubs = [tasks_pb2_grpc.TaskServiceStub(c) for c in self._channels]

    def stub(self, index: int) -> Any:
        """The stub of channel ``index`` modulo the channel count."""
        return self.stubs[index % len(self.stubs)]

    async def ready(self, timeout_seconds: float) -> None:
        """Connect every channel before streams are started on them."""
        await asyncio.wait_for(
            asyncio.gather(*(c.channel_ready() for c in self._channels)), timeout_seconds
        )

    async def close(self) -> None:
        """Close every channel at once: every stream on them is dropped."""
        await asyncio.gather(*(c.close() for c in self._channels))


def follow_all(
    watchers: Sequence[Watcher],
    channels: Channels,
    *,
    window: LatencyWindow | None,
    timeout_seconds: float,
) -> list[asyncio.Task[None]]:
    """Start one stream per watcher, all before the loop runs any of them."""
    for w in watchers:
        w.begin_stream()
    return [
        asyncio.create_task(
            w.follow(channels.stub(i), window=window, timeout_seconds=timeout_seconds)
        )
        for i, w in enumerate(watchers)
    ]


async def wait_first_items(watchers: Iterable[Watcher], timeout_seconds: float) -> int:
    """Wait (bounded) until every watcher's current stream delivered an item; how many did."""
    pending = [asyncio.create_task(w.first_item.wait()) for w in watchers]
    if pending:
        _done, late = await asyncio.wait(pending, timeout=timeout_seconds)
        for task in late:
            task.cancel()
    return sum(1 for w in watchers if w.first_item_at is not None)


def sequence_faults(watcher: Watcher) -> str:
    """ "" when the watcher saw exactly 1..terminal; else what went wrong."""
    seqs = watcher.sequences
    if watcher.terminal_sequence is None:
        return "no terminal event"
    expected = list(range(1, watcher.terminal_sequence + 1))
    if seqs == expected:
        return ""
    if len(set(seqs)) != len(seqs):
        return "repeat"
    return "gap"

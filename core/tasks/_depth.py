"""The broker's own figures of a queue: messages ready and consumers attached.

A passive ``queue.declare`` asks RabbitMQ about a queue without creating or changing it;
the answer carries the queue's ready message count and its consumer count, the figures
``rabbitmqctl list_queues messages consumers`` prints. Each queue is asked on a channel of
its own: a passive declare of a missing queue closes its channel (404), which must not
hide the figures of the next one. One short-lived connection per call, with a bounded
connect timeout: GetTaskStats is an operator's occasional read, never on a hot path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from kombu.connection import Connection

__all__ = ["QueueFigures", "queue_figures"]

_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One queue as the broker reported it (or why it did not)."""

    queue: str
    messages: int = 0
    consumers: int = 0
    error: str = ""
    """Empty when the broker answered."""

    @property
    def reachable(self) -> bool:
        """Whether the broker answered for this queue."""
        return not self.error


def queue_figures(url: str, queues: Sequence[str]) -> list[QueueFigures]:
    """Ask the broker at ``url`` about each of ``queues`` (blocking; run it off the loop)."""
    try:
        connection = Connection(url, connect_timeout=_TIMEOUT_SECONDS)
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=_TIMEOUT_SECONDS)
    except Exception as exc:  # kombu raises the transport's own errors; report any
        reason = f"the broker did not answer: {type(exc).__name__}: {exc}"
        return [QueueFigures(name, error=reason) for name in queues]
    figures: list[QueueFigures] = []
    with connection:
        for name in queues:
            channel = connection.channel()
            try:
                _, messages, consumers = channel.queue_declare(queue=name, passive=True)
                figures.append(QueueFigures(name, int(messages), int(consumers)))
            except Exception as exc:  # a missing queue (404) closes only this channel
                figures.append(QueueFigures(name, error=f"{type(exc).__name__}: {exc}"))
            finally:
                with contextlib.suppress(Exception):  # closed by the broker's refusal
                    channel.close()
    return figures

"""The beat's client of the API server's TaskService: how a fire becomes an ordinary task.

The beat submits through the same RPCs as any caller (authentication, roles, the submit
rate, idempotency on ``request_id``, ListTasks and the metrics all apply), so it needs
none of the server's code. Every call has a deadline; only transient codes are retried,
with the one backoff policy (``core.backoff``), inside the total deadline; no
``grpc.RpcError`` leaves this module (``SubmitError`` carries the code).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
from agentic.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from google.protobuf.message import Message

from core.backoff import Backoff
from core.tls import channel_credentials

__all__ = ["SubmitError", "TaskClient"]

# UNAVAILABLE: the server or its database is down for a moment; RESOURCE_EXHAUSTED: the
# submit rate of the beat's principal. Anything else (a bad token, a refused role) will not
# change by retrying within one fire.
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
_RETRY = Backoff(first_seconds=0.1, max_seconds=1.0)

RequestT = TypeVar("RequestT", bound=Message)


class _Response(Protocol):
    @property
    def task(self) -> tasks_pb2.Task: ...


ResponseT = TypeVar("ResponseT", bound=_Response)


class SubmitError(Exception):
    """A fire's submit failed; ``code`` is the last gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code


class TaskClient:
    """TaskService at ``address``, calls authorized by the token in ``token_file``."""

    def __init__(
        self,
        address: str,
        *,
        token_file: str = "",
        ca_file: str = "",
        timeout_seconds: float = 5.0,
    ) -> None:
        if ca_file:
            self._channel = grpc.secure_channel(address, channel_credentials(ca_file))
        else:
            self._channel = grpc.insecure_channel(address)
        self.stub = tasks_pb2_grpc.TaskServiceStub(self._channel)
        self._token_file = Path(token_file) if token_file else None
        self._timeout = timeout_seconds

    def call(
        self,
        method: Callable[..., ResponseT],
        request: RequestT,
    ) -> tasks_pb2.Task:
        """``method(request)`` (a Submit RPC of ``self.stub``) -> the task it answered."""
        deadline = time.monotonic() + self._timeout
        delays = _RETRY.delays()
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = method(request, timeout=max(remaining, 0.01), metadata=self._metadata())
                return response.task
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = error.details() if isinstance(error, grpc.Call) else str(error)
                wait = next(delays)
                if code not in _TRANSIENT or time.monotonic() + wait >= deadline:
                    raise SubmitError(code, details or "") from None
                time.sleep(wait)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self._token_file is None:
            return ()
        # Read at every call: a refresher may replace the file while the beat runs.
        try:
            token = self._token_file.read_text().strip()
        except OSError as exc:
            raise SubmitError(
                grpc.StatusCode.UNAUTHENTICATED, f"cannot read the token file: {exc.strerror}"
            ) from None
        return (("authorization", f"Bearer {token}"),)

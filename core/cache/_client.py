"""Typed async client of the cache sidecar, for the API server and the workers.

It wraps the generated stub once: every call has a deadline, and ``grpc.RpcError``
never escapes. Failures surface as::

    CacheClientError
    ├── CacheUnavailable    the sidecar is unreachable, timed out, overloaded or broken:
    │                       serve from the origin (read_through does this by itself)
    └── CacheRejected       the sidecar refused the request (bad namespace, key, value
                            size or token): a caller bug, never retried

Invalidations are idempotent and matter for correctness, so they are retried on
transient codes with exponential backoff inside a total deadline; reads are not (the
origin is the fallback, and it is faster than a retry).

Typical use on the read path::

    data = await cache.read_through("projects", project_id.encode(), load_project)

and on the write path, before acknowledging the write::

    await cache.invalidate("projects", [project_id.encode()])   # raises if it could not
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import grpc
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import Counter

from core.backoff import Backoff

__all__ = [
    "CHANNEL_OPTIONS",
    "CacheClient",
    "CacheClientError",
    "CacheRead",
    "CacheRejected",
    "CacheUnavailable",
    "FillResult",
    "Invalidation",
    "Outcome",
    "Warmed",
]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

# Codes that mean "the caller sent something wrong": retrying or falling back would
# hide a bug. Every other code means the cache cannot help right now.
_REJECTED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
# Worth another attempt for idempotent calls: the request most likely never ran, or
# the server asked us to back off.
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# Retries of an invalidation inside its deadline (2 s by default): the sidecar runs beside
# its server, so a short first wait; the cap leaves several attempts within the deadline.
_RETRY = Backoff(first_seconds=0.02, max_seconds=0.5)
_WARN_INTERVAL_SECONDS = 60.0

# The sidecar runs beside its server, so reconnecting is cheap: retry every 100-500 ms
# instead of gRPC's default backoff (1 s growing to 120 s), which kept a server on the
# database for about 5 s after its sidecar restarted.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)

UNAVAILABLE = Counter(
    "agentic_cache_client_unavailable_total",
    "Calls to the cache sidecar that failed as unavailable (the origin answered instead).",
    ("code",),
)


class CacheClientError(Exception):
    """Base of the errors this client raises."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class CacheUnavailable(CacheClientError):
    """The sidecar could not answer; fall back to the origin."""


class CacheRejected(CacheClientError):
    """The sidecar rejected the request; ``reason`` is ErrorInfo.reason, ``violations``
    maps each bad field to its description."""

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode,
        reason: str = "",
        violations: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code)
        self.reason = reason
        self.violations = violations or {}


class Outcome(enum.Enum):
    """What the caller must do after get()."""

    HIT = "hit"
    NEGATIVE_HIT = "negative_hit"
    LOAD = "load"
    LOAD_NO_FILL = "load_no_fill"


class FillResult(enum.Enum):
    """What fill() did."""

    STORED = "stored"
    STALE = "stale"
    UNAVAILABLE = "unavailable"


class Warmed(enum.Enum):
    """What warm() did with a key."""

    STORED = "stored"
    """Loaded from the origin and stored (a value, or a cached "not found")."""
    ALREADY_CACHED = "already_cached"
    """The cache held it (a value or a cached "not found"): the origin was not read."""
    NOT_STORED = "not_stored"
    """Not stored: the node was unavailable, another reader's lease did not end in
    time, or an invalidation voided the fill (the next read loads the newer value)."""


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What a write makes stale: ``keys`` of ``namespace``, or all of it (``keys`` None)."""

    namespace: str
    keys: tuple[bytes, ...] | None = None


@dataclass(frozen=True, slots=True)
class CacheRead:
    """Answer of get(): the value of a HIT, the lease token of a LOAD."""

    outcome: Outcome
    value: bytes = b""
    lease_token: str = ""


_OUTCOMES = {
    cache_pb2.OUTCOME_HIT: Outcome.HIT,
    cache_pb2.OUTCOME_NEGATIVE_HIT: Outcome.NEGATIVE_HIT,
    cache_pb2.OUTCOME_LOAD: Outcome.LOAD,
    cache_pb2.OUTCOME_LOAD_NO_FILL: Outcome.LOAD_NO_FILL,
}
_FILL_RESULTS = {
    cache_pb2.FILL_RESULT_STORED: FillResult.STORED,
    cache_pb2.FILL_RESULT_STALE: FillResult.STALE,
    cache_pb2.FILL_RESULT_UNAVAILABLE: FillResult.UNAVAILABLE,
}


class CacheClient:
    """Async client of CacheService over one channel."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout_seconds: float = 1.0,
        invalidate_timeout_seconds: float = 2.0,
        owns_channel: bool = False,
        caller_deadline: Callable[[], float | None] | None = None,
        list_timeout_seconds: float = 10.0,
    ) -> None:
        """Wrap ``channel``.

        ``timeout_seconds`` is the deadline of get/fill/stats (the sidecar ends lease
        waits before it); ``invalidate_timeout_seconds`` is the total deadline of an
        invalidation including retries. ``caller_deadline`` returns the seconds the
        caller's own caller has left (None: no deadline); every call then uses the
        smaller of the two, so no cache call outlives the request it serves.
        ``list_timeout_seconds`` is the deadline of list_keys, which makes each
        Memcached node dump its keys (a pass over all its items).
        """
        self._channel = channel
        self._stub = cache_pb2_grpc.CacheServiceStub(channel)
        self._timeout = timeout_seconds
        self._invalidate_timeout = invalidate_timeout_seconds
        self._list_timeout = list_timeout_seconds
        self._owns_channel = owns_channel
        self._caller_deadline = caller_deadline
        self._warned_at = -_WARN_INTERVAL_SECONDS

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str = "",
        **kwargs: Any,
    ) -> CacheClient:
        """Open a channel to ``host:port``, owned by the client.

        Plaintext (a loopback sidecar) unless ``credentials`` are given, e.g.
        ``core.tls.channel_credentials(ca, cert, key)`` for a sidecar requiring mTLS.
        ``server_name``, with credentials, is the name the sidecar's certificate must
        carry when it differs from the host in ``address`` (a container name, say).
        A sidecar that refuses the handshake surfaces as CacheUnavailable.
        """
        options: list[tuple[str, Any]] = list(CHANNEL_OPTIONS)
        if credentials is None:
            if server_name:
                raise ValueError("server_name needs credentials: plaintext checks no name")
            channel = grpc.aio.insecure_channel(address, options=options)
            return cls(channel, owns_channel=True, **kwargs)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.aio.secure_channel(address, credentials, options=options)
        return cls(channel, owns_channel=True, **kwargs)

    async def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> CacheClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def get(self, namespace: str, key: bytes) -> CacheRead:
        """Read a key. Raises CacheUnavailable or CacheRejected."""
        request = cache_pb2.GetRequest(namespace=namespace, key=key)
        response = await self._call(self._stub.Get, request, self._timeout)
        outcome = _OUTCOMES.get(response.outcome)
        if outcome is None:
            raise CacheUnavailable(f"sidecar sent an unknown outcome {response.outcome}")
        return CacheRead(outcome, value=response.value, lease_token=response.lease_token)

    async def fill(
        self, namespace: str, key: bytes, lease_token: str, value: bytes | None
    ) -> FillResult:
        """Store a loaded value (None: the origin has no such key) under a lease."""
        request = cache_pb2.FillRequest(namespace=namespace, key=key, lease_token=lease_token)
        if value is None:
            request.not_found = True
        else:
            request.value = value
        response = await self._call(self._stub.Fill, request, self._timeout)
        return _FILL_RESULTS.get(response.result, FillResult.UNAVAILABLE)

    async def invalidate(self, namespace: str, keys: Sequence[bytes]) -> None:
        """Invalidate keys; returns once no later read can see their old values.

        Retries transient failures within invalidate_timeout_seconds, then raises
        CacheUnavailable: the caller must then not acknowledge its write as cached-safe.
        """
        request = cache_pb2.InvalidateRequest(namespace=namespace, keys=list(keys))
        await self._retrying(self._stub.Invalidate, request)

    async def invalidate_namespace(self, namespace: str) -> None:
        """Invalidate every key of a namespace; same guarantees as invalidate()."""
        request = cache_pb2.InvalidateNamespaceRequest(namespace=namespace)
        await self._retrying(self._stub.InvalidateNamespace, request)

    async def invalidate_many(self, invalidations: Sequence[Invalidation]) -> None:
        """Deliver several invalidations at once, within one invalidate_timeout_seconds.

        The calls run concurrently, so a write waits for the sidecar once, not once per
        namespace. Raises CacheUnavailable (or CacheRejected) if any of them failed; all
        are idempotent, so the caller may simply deliver all of them again.
        """
        calls = [
            self.invalidate_namespace(i.namespace)
            if i.keys is None
            else self.invalidate(i.namespace, i.keys)
            for i in invalidations
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def reachable(self) -> bool:
        """False while the channel knows the sidecar cannot be reached (TRANSIENT_FAILURE
        or closed): a call would fail, so callers need not wait for one."""
        state = self._channel.get_state(try_to_connect=False)
        return state not in (
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN,
        )

    async def wait_ready(self, timeout_seconds: float) -> bool:
        """Wait until the channel is connected (it reconnects meanwhile); True if it is."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout_seconds)
        except TimeoutError:
            return False
        return True

    async def stats(self) -> cache_pb2.StatsResponse:
        """Return the sidecar's counters and node states."""
        response: cache_pb2.StatsResponse = await self._call(
            self._stub.Stats, cache_pb2.StatsRequest(), self._timeout
        )
        return response

    async def list_keys(
        self, namespace: str, *, page_size: int = 0, page_token: str = ""
    ) -> cache_pb2.ListKeysResponse:
        """One page of the keys of a namespace's current generation (never values).

        Not retried: an operator's listing, which the operator repeats. Raises
        CacheUnavailable, or CacheRejected for an unknown namespace or a bad page token.
        """
        request = cache_pb2.ListKeysRequest(
            namespace=namespace, page_size=page_size, page_token=page_token
        )
        response: cache_pb2.ListKeysResponse = await self._call(
            self._stub.ListKeys, request, self._list_timeout
        )
        return response

    async def warm_plan(self, namespace: str) -> cache_pb2.GetWarmPlanResponse:
        """The namespace's warm policy and, for a most-read policy, its most read keys.

        Raises CacheUnavailable, or CacheRejected for an unknown namespace.
        """
        request = cache_pb2.GetWarmPlanRequest(namespace=namespace)
        response: cache_pb2.GetWarmPlanResponse = await self._call(
            self._stub.GetWarmPlan, request, self._timeout
        )
        return response

    async def read_through(
        self,
        namespace: str,
        key: bytes,
        loader: Callable[[], Awaitable[bytes | None]],
    ) -> bytes | None:
        """Return the value of a key from the cache, or from ``loader`` (None: not found).

        Implements the lease dance: on LOAD the loader runs and its result is filled;
        on LOAD_NO_FILL (or when the sidecar is unreachable) the loader runs and
        nothing is filled. Exceptions of the loader propagate; the lease then expires
        by itself and waiting readers load on their own.
        """
        try:
            read = await self.get(namespace, key)
        except CacheUnavailable:
            return await loader()
        if read.outcome is Outcome.HIT:
            return read.value
        if read.outcome is Outcome.NEGATIVE_HIT:
            return None
        value = await loader()
        if read.outcome is Outcome.LOAD:
            try:
                await self.fill(namespace, key, read.lease_token, value)
            except CacheUnavailable:
                pass  # the value is still good; the next reader loads again
            except CacheRejected as exc:
                # E.g. a value over max_value_bytes: serve it, just never cache it.
                _log.warning("cache fill of %s rejected: %s", namespace, exc)
        return value

    async def warm(
        self,
        namespace: str,
        key: bytes,
        loader: Callable[[], Awaitable[bytes | None]],
    ) -> Warmed:
        """Load a key into the cache unless it is cached already.

        The read_through lease dance without the fallback: a Get, and only on LOAD the
        loader and a Fill under the granted lease, so a warm fill never overwrites a value
        written (or invalidated) after the Get: the sidecar refuses it as stale. Raises
        CacheUnavailable when the sidecar cannot answer (warming is then pointless),
        CacheRejected for an unknown namespace or a value over its size limit; the
        loader's exceptions propagate (the lease then expires by itself).
        """
        read = await self.get(namespace, key)
        if read.outcome in (Outcome.HIT, Outcome.NEGATIVE_HIT):
            return Warmed.ALREADY_CACHED
        if read.outcome is Outcome.LOAD_NO_FILL:
            return Warmed.NOT_STORED
        value = await loader()
        stored = await self.fill(namespace, key, read.lease_token, value)
        return Warmed.STORED if stored is FillResult.STORED else Warmed.NOT_STORED

    def _bounded(self, seconds: float) -> float:
        left = None if self._caller_deadline is None else self._caller_deadline()
        return seconds if left is None else max(0.0, min(seconds, left))

    async def _call(self, method: Any, request: Any, deadline_seconds: float) -> Any:
        timeout = self._bounded(deadline_seconds)
        if timeout <= 0:  # nobody waits for the answer any more: do not even send it
            UNAVAILABLE.labels("DEADLINE_EXCEEDED").inc()
            raise CacheUnavailable(
                "cache sidecar: the caller's deadline has passed", grpc.StatusCode.DEADLINE_EXCEEDED
            )
        try:
            return await method(request, timeout=timeout)
        except grpc.RpcError as exc:
            error = _translate(exc)
            if isinstance(error, CacheUnavailable):
                code = error.code.name if error.code is not None else "UNKNOWN"
                UNAVAILABLE.labels(code).inc()
                self._warn(code)
            raise error from None

    def _warn(self, code: str) -> None:
        # A sidecar that refuses us (say a missing client certificate) is otherwise silent:
        # reads fall back to the origin. Say so, at most once a minute.
        now = time.monotonic()
        if now - self._warned_at >= _WARN_INTERVAL_SECONDS:
            self._warned_at = now
            _log.warning("cache sidecar unavailable (%s); reading from the origin", code)

    async def _retrying(self, method: Any, request: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._bounded(self._invalidate_timeout)
        delays = _RETRY.delays()
        while True:
            remaining = deadline - loop.time()
            try:
                return await self._call(method, request, remaining)
            except CacheUnavailable as exc:
                # Full jitter keeps a crowd of writers from retrying in lockstep.
                pause = next(delays)
                if exc.code not in _TRANSIENT or loop.time() + pause >= deadline:
                    raise
                if not self.reachable():
                    raise  # the connection was refused: a retry now cannot do better
            await asyncio.sleep(pause)


def _translate(exc: grpc.RpcError) -> CacheClientError:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(code)
    if code not in _REJECTED:
        return CacheUnavailable(f"cache sidecar: {details}", code)
    reason = ""
    violations: dict[str, str] = {}
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        status = None  # inconsistent details; the code and message are still right
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.update({v.field: v.description for v in bad.field_violations})
    return CacheRejected(f"cache sidecar: {details}", code, reason, violations)

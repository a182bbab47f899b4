"""The server interceptor every service shares: metrics, access, validation, error mapping.

Each RPC handler is wrapped once, outermost first:

1. metrics: ``grpc_server_started_total``, ``grpc_server_handled_total{grpc_code}`` and
   ``grpc_server_handling_seconds`` (the names go-grpc-prometheus made conventional);
2. access (when a ``Gate`` is given): authentication, the role table, limits and the
   incoming deadline, before anything looks at the request (see ``server.access``);
3. validation of the request against its protovalidate rules (our services only);
4. error mapping: an ``ApiError`` becomes its rich status; any other exception is a
   defect, logged with its traceback and answered INTERNAL without internals.

Request bytes that do not parse as the method's message (bad tags, truncation, invalid
UTF-8, nesting beyond the parser's limit) are the client's error, not ours. grpc.aio
parses them before any of the above runs and, left alone, answers UNKNOWN quoting the
parser's exception. So every handler's request deserializer is wrapped: a failed parse
yields the ``UNDECODABLE`` marker instead of raising, and the guard answers it with
INVALID_ARGUMENT and a fixed message (after access, so an anonymous caller still learns
nothing but UNAUTHENTICATED). This holds for every method, health and reflection too.

Health and reflection pass through the same metrics but skip validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import grpc
from prometheus_client import Counter, Histogram

from core.rpc._errors import ApiError, Internal, InvalidArgument
from core.rpc._validation import validate_request

log = logging.getLogger(__name__)

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _LABELS)
HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server.", (*_LABELS, "grpc_code")
)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to sending its status.",
    _LABELS,
    # 0.2 is the latency objective (p99 under 200 ms, GrpcLatencyHigh counts the calls above
    # it); 0.25 stays so that queries and dashboards written against it keep working.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2.5, 5, 10),
)

Behavior = Callable[..., Any]
Deserializer = Callable[[bytes], Any]


class _Undecodable:
    """Marker type of a request whose bytes did not parse (see the module docstring)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDECODABLE"


UNDECODABLE = _Undecodable()
"""What a wrapped deserializer returns for bytes that are not the method's message."""

UNDECODABLE_MESSAGE = "the request message could not be decoded"
"""The one message of that INVALID_ARGUMENT: nothing from the parser, nothing from the input."""


def _tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    """``deserializer``, returning ``UNDECODABLE`` instead of raising on bad bytes."""
    if deserializer is None:  # a generic handler that takes raw bytes
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            # DecodeError for bad tags, truncation and invalid UTF-8; the parsers have
            # raised others (RecursionError, ValueError) for deep nesting. Any failure to
            # parse client bytes is the client's: nothing here is worth a traceback.
            return UNDECODABLE

    return deserialize


def _undecodable() -> InvalidArgument:
    return InvalidArgument([], message=UNDECODABLE_MESSAGE, reason="UNDECODABLE_REQUEST")


async def _decoded(requests: AsyncIterator[Any], guard: _Guard) -> AsyncIterator[Any]:
    """A client stream's messages, each checked like a unary request (undecodable, then
    its proto rules); raises at the first one that fails."""
    async for request in requests:
        guard.check_message(request)
        yield request


class Gate(Protocol):
    """Admits a call (authentication, authorization, limits) for the duration of a block."""

    def enter(
        self, method: str, context: grpc.aio.ServicerContext, *, streaming: bool
    ) -> AbstractAsyncContextManager[None]:
        """Raise an ApiError to refuse the call; otherwise hold what it needs until exit."""
        ...


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


async def _abort(context: grpc.aio.ServicerContext, error: ApiError) -> None:
    status = error.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)


def _final_code(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "OK" if exc is None else "UNKNOWN"


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped: an Any base
    """Wraps every handler with metrics, validation (``validate_prefixes``) and error mapping."""

    def __init__(
        self, validate_prefixes: tuple[str, ...] = ("/agentic.",), *, gate: Gate | None = None
    ) -> None:
        self._validate_prefixes = validate_prefixes
        self._gate = gate
        # grpc.aio calls intercept_service on every RPC; wrapping (closures, metric label
        # look-ups) is done once per method and reused, keeping it off the hot path.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        service, name = _split(method)
        validate = method.startswith(self._validate_prefixes)
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, self._guard(service, name, "unary", validate)),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(
                    handler.unary_stream, self._guard(service, name, "server_stream", validate)
                ),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            # Only reflection uses bidi streams here; count it, leave it unvalidated.
            return grpc.stream_stream_rpc_method_handler(
                self._stream(
                    handler.stream_stream,
                    self._guard(service, name, "bidi_stream", False),
                    client_streaming=True,
                ),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            # ByteStream's Write: every message is validated as it is read.
            return grpc.stream_unary_rpc_method_handler(
                self._unary(
                    handler.stream_unary,
                    self._guard(service, name, "client_stream", validate),
                    client_streaming=True,
                ),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _guard(self, service: str, name: str, kind: str, validate: bool) -> _Guard:
        return _Guard(service, name, kind, validate, self._gate)

    @staticmethod
    def _unary(behavior: Behavior, guard: _Guard, *, client_streaming: bool = False) -> Behavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # A client stream's messages are parsed as the behavior reads them, so the
            # guard sees none of them; _decoded checks each on the way in.
            first = None if client_streaming else request
            async with guard.call(first, context):
                messages = _decoded(request, guard) if client_streaming else request
                return await behavior(messages, context)

        return wrapped

    @staticmethod
    def _stream(behavior: Behavior, guard: _Guard, *, client_streaming: bool = False) -> Behavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            first = None if client_streaming else request
            async with guard.call(first, context):
                messages = _decoded(request, guard) if client_streaming else request
                result = behavior(messages, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:  # a handler that streams with `await context.write(...)`
                    await result

        return wrapped


class _Guard:
    """Metrics, access, validation and error mapping around one method's calls.

    Labels and the method's access settings are bound once, at first use of the method.
    """

    def __init__(
        self, service: str, name: str, kind: str, validate: bool, gate: Gate | None
    ) -> None:
        labels = (kind, service, name)
        self._method = f"/{service}/{name}"
        self._gate = gate
        self._streaming = kind != "unary"
        self._labels = labels
        self._where = f"{service}/{name}"
        self._domain = service.rpartition(".")[0]  # the proto package, e.g. agentic.projects.v1
        self._validate = validate
        self._started = STARTED.labels(*labels)
        self._histogram = HANDLING.labels(*labels)

    @contextlib.asynccontextmanager
    async def call(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Count the call, validate its request, map what it raises, record its code."""
        self._started.inc()
        begin = time.perf_counter()
        failure: BaseException | None = None
        try:
            if self._gate is None:
                self._check(request)
                yield
            else:
                async with self._gate.enter(self._method, context, streaming=self._streaming):
                    self._check(request)
                    yield
        except ApiError as error:
            await _abort(context, error)
        except Exception as exc:
            failure = exc
            if context.code() is not None:  # the handler aborted on purpose
                raise
            log.exception("unhandled error in %s", self._where)
            await _abort(context, Internal("internal error", reason="INTERNAL"))
        except BaseException as exc:
            failure = exc
            raise
        finally:
            HANDLED.labels(*self._labels, _final_code(context, failure)).inc()
            self._histogram.observe(time.perf_counter() - begin)

    def check_message(self, request: Any) -> None:
        """Refuse one message of a client stream that is undecodable or breaks its rules."""
        if request is UNDECODABLE:
            raise _undecodable()
        if self._validate:
            validate_request(request, domain=self._domain)

    def _check(self, request: Any) -> None:
        """Refuse an undecodable request, then one that breaks its rules.

        ``request`` is None for client streams, whose messages are checked as they are read.
        """
        if request is UNDECODABLE:
            raise _undecodable()
        if self._validate and request is not None:
            validate_request(request, domain=self._domain)

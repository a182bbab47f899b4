"""Test identities: one development key set per test process, tokens, and channels that
carry a token on every call.

Every API server a test starts (``tests._support.start_service("server", ...)``) trusts
this key set unless the test configures its own, so fixtures get authenticated channels
with one line: ``authorized_channel(address)`` (an Administrator by default).
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from devtools.devkeys import DevKeys
from server.auth import Role

__all__ = [
    "ADMIN",
    "SERVICE_ACCOUNT",
    "SERVICE_ACCOUNT_LIMITS",
    "Role",
    "auth_env",
    "authorized_aio_channel",
    "authorized_channel",
    "bearer",
    "dev_keys",
    "metadata",
    "service_token",
    "token",
    "token_channel",
]

ADMIN = "test-admin"
"""Subject of the default test principal, an Administrator."""

SERVICE_ACCOUNT = "agentic-beat"
"""A subject the API server admits session-less tokens for by default."""

SERVICE_ACCOUNT_LIMITS = {
    "AGENTIC_SUBMIT_RATE_PER_SECOND": "1000000",
    "AGENTIC_SUBMIT_BURST": "1000000",
    "AGENTIC_MAX_WATCH_STREAMS_PER_PRINCIPAL": "1000000",
}
"""Server environment for one principal driving a whole load, as an operator would raise the
per-principal limits for a service account (the limits themselves have their own tests)."""


@functools.cache
def dev_keys() -> DevKeys:
    """This process's key set, generated on first use (under the system temp directory)."""
    keys = DevKeys(Path(tempfile.gettempdir()) / f"agentic-test-keys-{os.getpid()}")
    keys.ensure()
    return keys


def auth_env() -> dict[str, str]:
    """Environment for an API server that trusts ``dev_keys()``."""
    return {"AGENTIC_AUTH_JWKS": str(dev_keys().jwks_path)}


# Re-minted after this: a session's idle timeout (30 min by default) counts from its token's
# iat on a server that has not seen it yet, and one test process can outlive that.
_TOKEN_REUSE_SECONDS = 600.0
_tokens: dict[tuple[str, tuple[Role, ...]], tuple[str, float]] = {}


def token(subject: str = ADMIN, roles: tuple[Role, ...] = (Role.ADMINISTRATOR,)) -> str:
    """A token valid for an hour with a session of its own (``sid``), reused for ten
    minutes (reuse is what real clients do)."""
    key = (subject, tuple(roles))
    known = _tokens.get(key)
    if known is not None and time.monotonic() - known[1] < _TOKEN_REUSE_SECONDS:
        return known[0]
    value = dev_keys().mint(subject, list(roles), ttl_seconds=3600)
    _tokens[key] = (value, time.monotonic())
    return value


def service_token(
    subject: str = SERVICE_ACCOUNT, roles: tuple[Role, ...] = (Role.ADMINISTRATOR,)
) -> str:
    """A session-less token (no ``sid``): admitted only for subjects and roles on the
    server's allow-list (``AGENTIC_SESSIONLESS_SUBJECTS``, default ``agentic-beat``)."""
    return dev_keys().mint(subject, list(roles), ttl_seconds=3600, session=False)


def bearer(value: str) -> str:
    """The ``authorization`` metadata value for ``value``."""
    return f"Bearer {value}"


def metadata(
    subject: str = ADMIN, roles: tuple[Role, ...] = (Role.ADMINISTRATOR,)
) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a token of ``subject`` with ``roles``."""
    return (("authorization", bearer(token(subject, roles))),)


def _with_metadata(details: Any, extra: Sequence[tuple[str, str]]) -> Any:
    existing = list(details.metadata or ())
    if any(key == "authorization" for key, _ in existing):
        return details  # the test chose its own credentials for this call
    return details._replace(metadata=[*existing, *extra])


class _CallDetails(grpc.ClientCallDetails):  # type: ignore[misc]  # grpc is untyped: an Any base
    def __init__(self, details: Any, extra: Sequence[tuple[str, str]]) -> None:
        existing = list(details.metadata or ())
        if not any(key == "authorization" for key, _ in existing):
            existing.extend(extra)
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = existing
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _AddToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]  # grpc is untyped: an Any base
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]  # grpc is untyped: an Any base
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]  # grpc is untyped: an Any base
):
    def __init__(self, extra: Sequence[tuple[str, str]]) -> None:
        self._extra = extra

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(_CallDetails(details, self._extra), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(_CallDetails(details, self._extra), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return continuation(_CallDetails(details, self._extra), requests)


def authorized_channel(
    address: str,
    subject: str = ADMIN,
    roles: tuple[Role, ...] = (Role.ADMINISTRATOR,),
    *,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A plaintext channel whose calls carry a token (unless a call sets its own)."""
    return token_channel(address, token(subject, roles), options=options)


def token_channel(
    address: str, value: str, *, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A plaintext channel whose calls carry the token ``value``."""
    channel = grpc.insecure_channel(address, options=list(options))
    return grpc.intercept_channel(channel, _AddToken((("authorization", bearer(value)),)))


class _AioUnaryToken(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # grpc is untyped: an Any base
    def __init__(self, extra: Sequence[tuple[str, str]]) -> None:
        self._extra = extra

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(_with_metadata(details, self._extra), request)


class _AioStreamToken(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]  # grpc is untyped: an Any base
    # A separate class: grpc.aio files each interceptor under the first kind it is an
    # instance of, so one object implementing both would never see streams.
    def __init__(self, extra: Sequence[tuple[str, str]]) -> None:
        self._extra = extra

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(_with_metadata(details, self._extra), request)


class _AioClientStreamToken(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]  # grpc is untyped: an Any base
    # ByteStream Write; a class of its own for the same reason as _AioStreamToken.
    def __init__(self, extra: Sequence[tuple[str, str]]) -> None:
        self._extra = extra

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return await continuation(_with_metadata(details, self._extra), requests)


def authorized_aio_channel(
    address: str,
    subject: str = ADMIN,
    roles: tuple[Role, ...] = (Role.ADMINISTRATOR,),
    *,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An asyncio plaintext channel whose calls carry a token (unless a call sets its own)."""
    extra = metadata(subject, roles)
    return grpc.aio.insecure_channel(
        address,
        options=list(options),
        interceptors=[_AioUnaryToken(extra), _AioStreamToken(extra), _AioClientStreamToken(extra)],
    )

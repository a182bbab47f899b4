"""The worker's read of a rule set: built-in from the code's data, custom through the cache.

A custom rule set is read through the cache sidecar exactly as the API server's
GetRuleSet reads it: namespace ``rule_sets``, key = the rule set's id, value = the
serialized ``agentic.compliance.v1.RuleSet`` (a cached "not found" for a missing id), the
origin ``core.compliance.load_rule_set`` on the worker's database. Built-in sets
(``aspice-3.1``) come from the package data and never touch the cache or the database.

Why the async ``core.cache.CacheClient`` on a loop thread, not the generated sync stub:
the lease protocol (a LOAD grants this reader the fill; LOAD_NO_FILL and an unreachable
sidecar mean "read the origin, fill nothing"; a fill voided by an invalidation is refused,
so a slow reader never writes back a value older than an update) is subtle, and
``CacheClient.read_through`` is its one implementation (STYLE 15): a second, synchronous
copy would be where the next bug hides. The Celery pool is prefork and synchronous, so
each worker process runs one small event loop in a daemon thread (started on the first
read, after the fork: gRPC channels do not survive a fork) owning one channel to the
sidecar, and the task's thread waits for the loop's answer. The origin read runs in a
helper thread (``asyncio.to_thread``), so the loop stays free for the fill's deadline.
One channel per process keeps gRPC's connectivity state between reports: a sidecar known
to be down costs a report nothing but the failed call's timeout.

Nothing is kept in the process: every report reads the sidecar (or the database), so a
report that starts after an UpdateRuleSet returned sees the new version (the server
invalidates the key synchronously before it acknowledges the update).

Failures: the sidecar unreachable, timing out or refusing the request means the origin
answers (the report does not depend on the cache); a database error raises
TransientError (the task is retried with backoff).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from agentic.compliance.v1 import rule_sets_pb2
from google.protobuf.message import DecodeError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from core.cache import CacheClient, CacheRejected, CacheUnavailable, Namespace
from core.compliance import BUILTIN_IDS, load_rule_set
from core.tls import TlsConfigError, configured_channel_credentials
from workers._context import TransientError

__all__ = ["CacheSettings", "RuleSets"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# The origin read behind a cache miss is one primary-key SELECT; this bounds the wait for
# the loop's whole answer (cache calls have their own, shorter deadlines) should the
# database hang rather than fail.
_ORIGIN_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How a worker reaches its cache sidecar (from WorkerConfig, the server's names)."""

    address: str = ""
    """``host:port`` of the sidecar; empty: no cache, read the database."""
    timeout_seconds: float = 1.0
    """Deadline of one cache call (a read, including a wait for another reader's fill)."""
    server_ca_file: str = ""
    """CA of the sidecar's certificate: set, the channel speaks TLS."""
    client_cert_file: str = ""
    """This worker's client certificate towards a sidecar that requires mTLS."""
    client_key_file: str = ""
    """Its key."""
    server_name: str = ""
    """Name to check the sidecar's certificate against, when not the address's host."""


class RuleSets:
    """Rule-set reads of one worker process (build it after the fork)."""

    def __init__(self, engine: Engine, cache: CacheSettings) -> None:
        self._engine = engine
        self._cache = cache
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: CacheClient | None = None
        self._broken = False

    def get(self, rule_set_id: str) -> rule_sets_pb2.RuleSet | None:
        """The rule set with this id, None when there is none.

        Raises TransientError when the database cannot answer.
        """
        if rule_set_id in BUILTIN_IDS or not self._cache.address:
            return self._origin(rule_set_id)
        client = self._connect()
        if client is None:
            return self._origin(rule_set_id)
        try:
            data = self._on_loop(
                client.read_through(
                    Namespace.RULE_SETS,
                    rule_set_id.encode(),
                    lambda: self._origin_async(rule_set_id),
                ),
                timeout=2 * self._cache.timeout_seconds + _ORIGIN_TIMEOUT_SECONDS,
            )
        except (CacheRejected, CacheUnavailable) as exc:
            # read_through falls back by itself when the sidecar is unreachable; a refusal
            # (a policy without the namespace: a deployment error) must not fail reports.
            log.warning(
                "rule set %s: cache read failed (%s); reading the database", rule_set_id, exc
            )
            return self._origin(rule_set_id)
        if data is None:
            return None
        try:
            return rule_sets_pb2.RuleSet.FromString(data)
        except DecodeError:
            log.error(
                "rule set %s: the cached value does not decode; reading the database", rule_set_id
            )
            return self._origin(rule_set_id)

    def _origin(self, rule_set_id: str) -> rule_sets_pb2.RuleSet | None:
        try:
            return load_rule_set(self._engine, rule_set_id)
        except (DBAPIError, SQLAlchemyError) as exc:
            raise TransientError(f"reading rule set {rule_set_id}: {exc}") from exc

    async def _origin_async(self, rule_set_id: str) -> bytes | None:
        found = await asyncio.to_thread(self._origin, rule_set_id)
        return None if found is None else found.SerializeToString()

    def _connect(self) -> CacheClient | None:
        """The process's client on its loop thread, started on first use; None when the
        sidecar's TLS files cannot be used (logged once; reads then go to the database)."""
        with self._lock:
            if self._client is not None or self._broken:
                return self._client
            cache = self._cache
            try:
                credentials = configured_channel_credentials(
                    cache.server_ca_file, cache.client_cert_file, cache.client_key_file
                )
            except TlsConfigError as exc:
                log.error("cache sidecar TLS: %s; rule sets are read from the database", exc)
                self._broken = True
                return None
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="rule-set-cache", daemon=True).start()
            self._loop = loop

            async def connect() -> CacheClient:
                # The channel belongs to the loop it is created on.
                return CacheClient.connect(
                    cache.address,
                    credentials=credentials,
                    server_name=cache.server_name,
                    timeout_seconds=cache.timeout_seconds,
                )

            self._client = self._on_loop(connect(), timeout=_ORIGIN_TIMEOUT_SECONDS)
            return self._client

    def _on_loop(self, coroutine: Coroutine[Any, Any, _T], *, timeout: float) -> _T:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TransientError(f"rule set read took longer than {timeout:g}s") from None

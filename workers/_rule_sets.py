"""The worker's read of a rule set: built-in from the code's data, custom through the cache.

A custom rule set is read through the cache sidecar exactly as the API server's
GetRuleSet reads it: namespace ``rule_sets``, key = the rule set's id, value = the
serialized ``agentic.compliance.v1.RuleSet`` (a cached "not found" for a missing id), the
origin ``core.compliance.load_rule_set`` on the worker's database. Built-in sets
(``aspice-3.1``) come from the package data and never touch the cache or the database.

The cache calls go through the process's one ``workers._cache_reader.CacheReader`` (its
loop thread and channel, shared with the cache warming kind), with the lease protocol of
``CacheClient.read_through``.

Nothing is kept in the process: every report reads the sidecar (or the database), so a
report that starts after an UpdateRuleSet returned sees the new version (the server
invalidates the key synchronously before it acknowledges the update).

Failures: the sidecar unreachable, timing out or refusing the request means the origin
answers (the report does not depend on the cache); a database error raises
TransientError (the task is retried with backoff).
"""

from __future__ import annotations

import asyncio
import logging

from agentic.compliance.v1 import rule_sets_pb2
from google.protobuf.message import DecodeError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from core.cache import CacheRejected, CacheUnavailable, Namespace
from core.compliance import BUILTIN_IDS, load_rule_set
from workers._cache_reader import CacheReader
from workers._context import TransientError

__all__ = ["RuleSets"]

log = logging.getLogger(__name__)

# The origin read behind a cache miss is one primary-key SELECT; this bounds the wait for
# the loop's whole answer (cache calls have their own, shorter deadlines) should the
# database hang rather than fail.
_ORIGIN_TIMEOUT_SECONDS = 30.0


class RuleSets:
    """Rule-set reads of one worker process (build it after the fork)."""

    def __init__(self, engine: Engine, cache: CacheReader) -> None:
        self._engine = engine
        self._cache = cache

    def get(self, rule_set_id: str) -> rule_sets_pb2.RuleSet | None:
        """The rule set with this id, None when there is none.

        Raises TransientError when the database cannot answer.
        """
        if rule_set_id in BUILTIN_IDS:
            return self._origin(rule_set_id)
        client = self._cache.client()
        if client is None:
            return self._origin(rule_set_id)
        try:
            data = self._cache.call(
                client,
                lambda c: c.read_through(
                    Namespace.RULE_SETS,
                    rule_set_id.encode(),
                    lambda: self._origin_async(rule_set_id),
                ),
                timeout=2 * self._cache.settings.timeout_seconds + _ORIGIN_TIMEOUT_SECONDS,
                what="rule set read",
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

"""Rule sets as the servicer sees them: cached reads, invalidating writes, domain events.

GetRuleSet of a custom set reads through ``server.caching.CoherentCache`` (namespace
``rule_sets``, key = the id; the origin is ``core.compliance.load_rule_set``, the same
read the compliance worker's cache miss makes). Built-in sets are data in the code: they
are answered from it and never cached. A write runs ``CoherentWrites``' sequence: commit
the change with its event, invalidate the set's key within one bounded wait, publish the
event, and only then return (shielded from the caller's cancellation), so an
acknowledged update or delete is never followed by a read of the old version here, and
other replicas' caches and the workers' reads learn of it through the event.

Lists are not cached (rare next to reads by id; see ``core.cache.Namespace.RULE_SETS``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from agentic.compliance.v1 import rule_sets_pb2

from core.cache import Invalidation, Namespace
from core.compliance import BUILTIN_IDS
from core.db import in_database_thread
from core.events import EventRelay, Outboxed
from core.rpc import Unavailable
from server.auth import Principal
from server.caching import CoherentCache, CoherentWrites
from server.compliance._store import DOMAIN, RuleSetStore, rule_set_not_found

T = TypeVar("T")

NAMESPACE = Namespace.RULE_SETS


def _unavailable() -> Unavailable:
    return Unavailable(
        "the rule-set database is unavailable or timed out; try again",
        reason="DATABASE_UNAVAILABLE",
        domain=DOMAIN,
    )


def _stale_keys(rule_set_id: str) -> list[Invalidation]:
    return [Invalidation(NAMESPACE, (rule_set_id.encode(),))]


class RuleSets:
    """Async operations on rule sets over a store, the coherent cache and the event relay.

    The cache and the relay are the server's shared ones: whoever owns them (the projects
    facade) starts and stops their background work.
    """

    def __init__(
        self,
        store: RuleSetStore,
        executor: ThreadPoolExecutor,
        *,
        cache: CoherentCache,
        relay: EventRelay,
    ) -> None:
        self._store = store
        self._executor = executor
        self._cache = cache
        self._writes = CoherentWrites(cache, relay, self._run)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await in_database_thread(
            self._executor, functools.partial(fn, *args, **kwargs), unavailable=_unavailable
        )

    async def _write(self, call: Callable[[], tuple[T, Outboxed]], rule_set_id: str | None) -> T:
        def committed() -> tuple[T, list[Outboxed]]:
            value, event = call()
            return value, [event]

        # A create needs no synchronous invalidation: its id is new (server-assigned), and
        # its event drops any cached "not found" elsewhere all the same.
        stale = [] if rule_set_id is None else _stale_keys(rule_set_id)
        return await self._writes.write(committed, stale)

    async def get(self, rule_set_id: str, principal: Principal) -> rule_sets_pb2.RuleSet:
        """The rule set, from the code (built-in) or the cache; NOT_FOUND when none."""
        del principal  # every caller reaches every rule set (the role table decides)
        if rule_set_id in BUILTIN_IDS:
            return self._store.get(rule_set_id)  # from the code's data: no database, no cache

        def load() -> bytes | None:
            rule_set = self._store.find(rule_set_id)
            return None if rule_set is None else rule_set.SerializeToString()

        data = await self._cache.read(
            NAMESPACE,
            rule_set_id.encode(),
            functools.partial(self._run, load),
            resource="rule_set",
        )
        if data is None:
            raise rule_set_not_found(rule_set_id)
        return rule_sets_pb2.RuleSet.FromString(data)

    async def list(
        self, request: rule_sets_pb2.ListRuleSetsRequest
    ) -> rule_sets_pb2.ListRuleSetsResponse:
        """One page of rule sets, from the database (built-in ones first)."""
        self._store.check_page_token(request.page_token)
        page = await self._run(
            self._store.list, page_size=request.page_size, page_token=request.page_token
        )
        return rule_sets_pb2.ListRuleSetsResponse(
            rule_sets=page.rule_sets, next_page_token=page.next_page_token
        )

    async def create(
        self, rule_set: rule_sets_pb2.RuleSet, principal: Principal
    ) -> rule_sets_pb2.RuleSet:
        """Create a custom set owned (recorded as created) by ``principal``."""
        call = functools.partial(self._store.create, rule_set, owner_id=principal.subject)
        return await self._write(call, None)

    async def update(
        self, rule_set_id: str, rule_set: rule_sets_pb2.RuleSet, fields: set[str], *, etag: str
    ) -> rule_sets_pb2.RuleSet:
        """Apply the masked ``fields``; the cached set is invalidated before returning."""
        call = functools.partial(self._store.update, rule_set_id, rule_set, fields, etag=etag)
        return await self._write(call, rule_set_id)

    async def delete(self, rule_set_id: str, *, etag: str) -> None:
        """Delete a custom set; the cached set is invalidated before returning."""

        def call() -> tuple[None, Outboxed]:
            return None, self._store.delete(rule_set_id, etag=etag)

        await self._write(call, rule_set_id)

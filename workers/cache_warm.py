"""The cache_warm kind: load what a namespace's warm policy names into the cache.

After ClearCacheNamespace, or when a Memcached node came back empty, every read of a hot
key goes to the database once; warming does those loads up front. Per namespace (the
spec's, or every namespace of ``core.cache.Namespace`` when it names none), the sidecar's
GetWarmPlan says what to load:

* ``WARM_MODE_ALL``: every key the origin has (``workers._warm_origins``);
* ``WARM_MODE_MOST_READ``: the keys the sidecar counted as read most in the policy's
  window, most read first;
* ``WARM_MODE_NONE``: nothing (a namespace the spec names gets an all-zero entry; with an
  empty spec it is left out).

Each key is read through the lease protocol (``CacheClient.warm``): a Get; a hit is
"already cached"; only a LOAD reads the origin and fills under the granted lease, so a
warm fill never overwrites a newer value (a write's invalidation voids the lease, and the
fill is refused: "not stored").

Decisions:
* A namespace with a warm policy but no worker origin fails the task up front (before
  any key is loaded), FAILED_PRECONDITION, reason ``WARM_ORIGIN_UNKNOWN``: the policy
  file promises warming that cannot happen, which an operator must see, not a silent
  zero.
* A namespace the sidecar does not know: INVALID_ARGUMENT, ``UNKNOWN_NAMESPACE``.
* No sidecar configured for the worker (AGENTIC_CACHE_ADDRESS empty) or its TLS files
  unusable: FAILED_PRECONDITION, ``CACHE_DISABLED``.
* The sidecar unavailable, or the database failing: TransientError (retried). Warming is
  idempotent: a retry finds the keys already warmed as "already cached".
"""

from __future__ import annotations

import asyncio
import logging

from agentic.cache.v1 import cache_pb2
from agentic.tasks.v1 import maintenance_pb2
from google.rpc import code_pb2
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from core.cache import CacheClient, CacheRejected, CacheUnavailable, Namespace, Warmed
from workers._cache_reader import CacheReader
from workers._context import PermanentError, TaskContext, TransientError
from workers._warm_origins import ORIGINS, Origin

__all__ = ["run_cache_warm"]

log = logging.getLogger(__name__)

# One key's warm: a Get, an origin read (one primary-key SELECT) and a Fill; this bounds
# the wait for all of it should the database hang rather than fail.
_KEY_TIMEOUT_SECONDS = 30.0
# Progress and cancel checks every this many keys: a database write per key is too many.
_REPORT_EVERY_KEYS = 50


def run_cache_warm(
    spec: maintenance_pb2.CacheWarmSpec, context: TaskContext
) -> maintenance_pb2.CacheWarmResult:
    """Warm each namespace per its policy; report per namespace what happened to its keys."""
    reader = context.cache
    client = reader.client()
    if client is None:
        raise PermanentError(
            "this worker has no cache sidecar (AGENTIC_CACHE_ADDRESS is empty, or its TLS "
            "files are unusable): nothing can be warmed",
            reason="CACHE_DISABLED",
        )
    named = list(spec.namespaces)
    plans = [(ns, _plan(reader, client, ns)) for ns in (named or [n.value for n in Namespace])]
    # Checked before any load: a policy the worker cannot honour fails the whole run.
    for namespace, plan in plans:
        if plan.mode != cache_pb2.WARM_MODE_NONE and namespace not in ORIGINS:
            raise PermanentError(
                f"namespace {namespace!r} has a warm policy, but workers know no origin to "
                f"load it from (they can warm: {', '.join(sorted(ORIGINS))}); remove its "
                "warm rule from the sidecar's policy file",
                reason="WARM_ORIGIN_UNKNOWN",
                metadata={"namespace": namespace},
            )
    result = maintenance_pb2.CacheWarmResult()
    for index, (namespace, plan) in enumerate(plans):
        if plan.mode == cache_pb2.WARM_MODE_NONE:
            if named:
                result.namespaces.append(
                    maintenance_pb2.NamespaceWarmed(namespace=namespace, policy="none")
                )
            continue
        context.report_progress(index / len(plans), f"warming {namespace}")
        result.namespaces.append(
            _warm_namespace(
                context, reader, client, namespace, plan, ORIGINS[namespace], index / len(plans)
            )
        )
    context.report_progress(1.0, f"warmed {len(result.namespaces)} namespaces")
    return result


def _plan(
    reader: CacheReader, client: CacheClient, namespace: str
) -> cache_pb2.GetWarmPlanResponse:
    try:
        return reader.call(
            client,
            lambda c: c.warm_plan(namespace),
            timeout=2 * reader.settings.timeout_seconds + 1.0,
            what="GetWarmPlan",
        )
    except CacheRejected as exc:
        raise PermanentError(
            f"the cache sidecar refused namespace {namespace!r}: {exc}",
            reason="UNKNOWN_NAMESPACE",
            metadata={"namespace": namespace},
            code=code_pb2.INVALID_ARGUMENT,
        ) from exc
    except CacheUnavailable as exc:
        raise TransientError(f"cache sidecar unavailable: {exc}") from exc


def _policy_name(plan: cache_pb2.GetWarmPlanResponse) -> str:
    # The sidecar's own wording (cache_sidecar._policy.WarmPolicy.describe).
    if plan.mode == cache_pb2.WARM_MODE_MOST_READ:
        return f"most_read:{plan.limit}/{plan.window_seconds}s"
    return "all"


def _warm_namespace(
    context: TaskContext,
    reader: CacheReader,
    client: CacheClient,
    namespace: str,
    plan: cache_pb2.GetWarmPlanResponse,
    origin: Origin,
    fraction: float,
) -> maintenance_pb2.NamespaceWarmed:
    """Warm one namespace; ``fraction`` is the task's progress when it starts (the number
    of keys is not known up front, so progress stays there and the message counts)."""
    engine = context.database
    keys = origin.keys(engine) if plan.mode == cache_pb2.WARM_MODE_ALL else iter(plan.keys)
    done = maintenance_pb2.NamespaceWarmed(namespace=namespace, policy=_policy_name(plan))
    try:
        for key in keys:
            outcome = _warm_key(reader, client, engine, namespace, key, origin)
            done.keys_considered += 1
            if outcome is Warmed.STORED:
                done.keys_warmed += 1
            elif outcome is Warmed.ALREADY_CACHED:
                done.keys_already_cached += 1
            else:
                done.keys_not_stored += 1
            if done.keys_considered % _REPORT_EVERY_KEYS == 0:
                context.raise_if_cancelled()
                context.report_progress(fraction, f"{namespace}: {done.keys_considered} keys")
    except (DBAPIError, SQLAlchemyError) as exc:
        raise TransientError(f"warming {namespace}: database: {exc}") from exc
    log.info(
        "warmed %s (%s): %d keys, %d loaded, %d already cached, %d not stored",
        namespace,
        done.policy,
        done.keys_considered,
        done.keys_warmed,
        done.keys_already_cached,
        done.keys_not_stored,
    )
    return done


def _warm_key(
    reader: CacheReader,
    client: CacheClient,
    engine: Engine,
    namespace: str,
    key: bytes,
    origin: Origin,
) -> Warmed:
    async def load() -> bytes | None:
        return await asyncio.to_thread(origin.load, engine, key)

    try:
        return reader.call(
            client,
            lambda c: c.warm(namespace, key, load),
            timeout=2 * reader.settings.timeout_seconds + _KEY_TIMEOUT_SECONDS,
            what=f"warming {namespace} key",
        )
    except CacheUnavailable as exc:
        raise TransientError(f"cache sidecar unavailable while warming {namespace}: {exc}") from exc
    except CacheRejected as exc:
        # A value over the namespace's max_value_bytes: the server never caches it either.
        log.warning("%s: fill of a warmed key refused: %s", namespace, exc)
        return Warmed.NOT_STORED

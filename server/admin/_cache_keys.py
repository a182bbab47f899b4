"""ListCacheKeys and WarmCache: the cache's keys as the operator sees them, and the
request of a cache warming task.

ListCacheKeys pages through the sidecar's ListKeys (one node key dump per page, only the
namespace's current generation, never values) and shows each key as the callers' key: a
project or rule set id, or the ``#`` digest the sidecar stored an unprintable or
over-long key under (``hashed``). The page token is the sidecar's, passed through; one it
refuses is INVALID_ARGUMENT on ``page_token`` here too.

WarmCache only builds the TASK_KIND_CACHE_WARM submission: a fresh request_id per call
(every call is a run), the namespaces as given (empty: every namespace with a warm rule).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from agentic.admin.v1 import admin_pb2
from agentic.cache.v1 import cache_pb2
from agentic.tasks.v1 import maintenance_pb2, tasks_pb2

from core.cache import CacheClient, CacheRejected, Namespace
from core.rpc import FieldViolation, InvalidArgument

__all__ = ["list_cache_keys", "warm_request"]

DOMAIN = "agentic.admin.v1"


async def list_cache_keys(
    cache: CacheClient, namespace: Namespace, page_size: int, page_token: str
) -> admin_pb2.ListCacheKeysResponse:
    """One page of the namespace's cached keys. Raises CacheUnavailable (the caller maps
    it to UNAVAILABLE) or InvalidArgument for a page token the sidecar refuses."""
    try:
        page = await cache.list_keys(namespace.value, page_size=page_size, page_token=page_token)
    except CacheRejected as error:
        if "page_token" in error.violations:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "page_token",
                        "is not a next_page_token ListCacheKeys returned for this namespace",
                        reason="page_token.invalid",
                    )
                ],
                reason="INVALID_PAGE_TOKEN",
                domain=DOMAIN,
            ) from None
        raise
    return admin_pb2.ListCacheKeysResponse(
        keys=[_cached_key(info) for info in page.keys],
        next_page_token=page.next_page_token,
        cache_enabled=True,
    )


def _cached_key(info: cache_pb2.KeyInfo) -> admin_pb2.CachedKey:
    # Stored tokens are printable ASCII by construction (cache_sidecar._keys).
    key = admin_pb2.CachedKey(
        key=info.key.decode("ascii", "replace"),
        hashed=info.hashed,
        node=info.node,
        size_bytes=info.size_bytes,
    )
    if info.expire_unix_seconds:
        key.expire_time.FromSeconds(info.expire_unix_seconds)
    key.last_access_time.FromSeconds(info.last_access_unix_seconds)
    return key


def warm_request(namespaces: Sequence[Namespace]) -> tasks_pb2.SubmitCacheWarmRequest:
    """The Submit request of a cache warming run of ``namespaces`` (empty: all with a
    warm rule)."""
    return tasks_pb2.SubmitCacheWarmRequest(
        request_id=str(uuid.uuid4()),
        cache_warm=maintenance_pb2.CacheWarmSpec(namespaces=[n.value for n in namespaces]),
    )

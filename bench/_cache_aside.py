"""Variant (b) of the reads-under-load section: the cache-aside a team writes by hand.

Run as ``python -m bench._cache_aside`` with the API server's environment (no sidecar:
``AGENTIC_CACHE_ADDRESS`` empty) plus ``BENCH_CACHE_ASIDE_MEMCACHED=127.0.0.1:<port>``.
It is the real API server (``server.__main__``) with one thing swapped: the coherent
cache its facades read through is ``HandCacheAside``, which does exactly what the
source documents' snippet does, translated to pymemcache:

* read: ``get``; on a miss read the database and ``set`` with a TTL (300 s, the
  sidecar's default, so both caches keep values as long);
* write: commit, then ``delete`` the key.

Only single projects are cached this way (keys ``aside:<namespace>:<id>``); every other
read (list pages, rule sets, artifacts) goes to the database, as with no cache, which
the reads-under-load section does not exercise. The pymemcache calls run on the event
loop with one client, with no thread hop: the cheapest a hand-written cache gets, so it
is a hard baseline for the sidecar's extra hop. Nothing closes the race of
cache-aside: a reader that missed, read the old row, and ``set`` it after a writer's
``delete`` leaves the old value in the cache until its TTL; the section counts those
stale reads. The swap is a module attribute of ``server.app`` replaced before the
server is built: server code is not changed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheError

import server.app
from core.cache import CacheClient, Invalidation, Namespace
from server.__main__ import main as server_main
from server.caching import CoherentCache

__all__ = ["MEMCACHED_ENV", "TTL_SECONDS", "HandCacheAside"]

MEMCACHED_ENV = "BENCH_CACHE_ASIDE_MEMCACHED"
"""The environment variable naming the memcached (host:port) of the hand-written cache."""
TTL_SECONDS = 300
# The sidecar's pymemcache timeouts (bench._bare uses the same): a slow memcached costs
# a read at most this much before it falls back to the database.
_CONNECT_TIMEOUT_SECONDS = 0.05
_TIMEOUT_SECONDS = 0.1
_CACHED = frozenset({Namespace.PROJECTS.value})


def _key(namespace: str, key: bytes) -> str:
    return f"aside:{namespace}:{key.decode()}"


class HandCacheAside(CoherentCache):
    """Cache-aside by hand over pymemcache, in place of the sidecar's coherent cache."""

    def __init__(self, cache: CacheClient | None, *, origin_concurrency: int) -> None:
        # The sidecar client is ignored (the variant runs without one); the database
        # reads still go through the base class, so they are counted as origin loads.
        super().__init__(None, origin_concurrency=origin_concurrency)
        host, _, port = os.environ[MEMCACHED_ENV].rpartition(":")
        self._memcached = Client(
            (host, int(port)),
            connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            timeout=_TIMEOUT_SECONDS,
            no_delay=True,
            default_noreply=False,
        )

    async def read(
        self,
        namespace: str,
        key: bytes,
        load: Callable[[], Awaitable[bytes | None]],
        *,
        resource: str,
    ) -> bytes | None:
        """get; on a miss, the database, then set with the TTL (a failure: no cache)."""
        if namespace not in _CACHED:
            return await super().read(namespace, key, load, resource=resource)
        name = _key(namespace, key)
        try:
            hit = self._memcached.get(name)
        except (MemcacheError, OSError):
            hit = None
        if hit is not None:
            return bytes(hit)
        value = await super().read(namespace, key, load, resource=resource)
        if value is not None:  # the snippet caches rows, not their absence
            with contextlib.suppress(MemcacheError, OSError):
                self._memcached.set(name, value, expire=TTL_SECONDS)
        return value

    async def invalidate(self, invalidations: Sequence[Invalidation]) -> None:
        """delete each cached key of the write (after its commit, as the snippet does)."""
        names = [
            _key(inv.namespace, key)
            for inv in invalidations
            if inv.namespace in _CACHED and inv.keys is not None
            for key in inv.keys
        ]
        if names:
            # As by hand: a failed delete leaves the old value until its TTL.
            with contextlib.suppress(MemcacheError, OSError):
                self._memcached.delete_many(names)


def main() -> None:
    """Run the API server with the hand-written cache-aside in place of the sidecar's."""
    # create_server looks the name up when it runs, so the swap takes effect there.
    server.app.CoherentCache = HandCacheAside  # type: ignore[attr-defined]  # the bench's one seam
    server_main()


if __name__ == "__main__":
    main()

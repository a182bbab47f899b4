"""Where artifact work blocks: the database threads and the object-store IO threads.

Both pools are the server's; a failure of either dependency becomes UNAVAILABLE with a
reason a client can act on (retry; an upload resumes from its committed size). Object
IO has threads of its own so a long transfer never starves database calls.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from core.db import in_database_thread
from core.objects import ObjectStoreError
from core.rpc import Unavailable
from server.artifacts._store import DOMAIN

__all__ = ["Threads", "object_store_unavailable"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _database_unavailable() -> Unavailable:
    return Unavailable(
        "the artifact database is unavailable or timed out; try again",
        reason="DATABASE_UNAVAILABLE",
        domain=DOMAIN,
    )


def object_store_unavailable(detail: object) -> Unavailable:
    """UNAVAILABLE for an object-store failure (the operation may be retried)."""
    log.warning("object store failure: %s", detail)
    return Unavailable(
        "the object store is unavailable or failed; try again (an upload resumes from "
        "QueryWriteStatus.committed_size)",
        reason="OBJECT_STORE_UNAVAILABLE",
        domain=DOMAIN,
    )


class Threads:
    """Runs blocking artifact work off the event loop, on the pool it belongs to."""

    def __init__(self, *, db: ThreadPoolExecutor, io: ThreadPoolExecutor) -> None:
        self._db = db
        self._io = io

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` in a database thread."""
        return await in_database_thread(self._db, call, unavailable=_database_unavailable)

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a database thread."""
        return await self.run(functools.partial(fn, *args, **kwargs))

    async def io(
        self,
        fn: Callable[..., T],
        *args: Any,
        passthrough: tuple[type[ObjectStoreError], ...] = (),
    ) -> T:
        """``fn(*args)`` in an object-IO thread; store errors other than ``passthrough``
        (which the caller handles itself) become UNAVAILABLE."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)
        except passthrough:
            raise
        except ObjectStoreError as exc:
            raise object_store_unavailable(exc) from None

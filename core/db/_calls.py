"""Database calls from the event loop: on a database thread, with the caller's context.

The copied context carries the RPC's deadline to the database thread, where
``install_statement_deadlines`` turns it into PostgreSQL's ``statement_timeout``. A
database that is down, refuses connections, times out or has no pooled connection to
spare becomes the caller's UNAVAILABLE error: the call did not take effect and may be
retried.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from core.rpc import ApiError

__all__ = ["in_database_thread"]

log = logging.getLogger(__name__)

T = TypeVar("T")


async def in_database_thread(
    executor: Executor, call: Callable[[], T], *, unavailable: Callable[[], ApiError]
) -> T:
    """``call()`` on ``executor`` in a copy of this context; database outages raise
    ``unavailable()``."""
    context = contextvars.copy_context()
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, context.run, call)
    except (OperationalError, InterfaceError, PoolTimeoutError) as exc:
        error = unavailable()
        log.warning("database call failed (%s): %s", error.domain, exc)
        raise error from None

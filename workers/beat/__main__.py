"""``python -m workers.beat``: run the beat until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine

from core.audit import AuditWriter
from core.db import make_engine
from core.serving import start_metrics, wait_for_stop_signal
from workers._beat_config import BeatConfig, ConfigError
from workers._leader import LeaderLease
from workers.beat._beat import Beat
from workers.beat._client import TaskClient
from workers.beat._jobs import JOBS, submit_job

LEASE_NAME = "beat"
"""The one lease every beat process of a deployment competes for."""


@dataclass
class BeatProcess:
    """A beat built from its configuration, not yet running."""

    beat: Beat
    holder: str
    """This process's id in the lease row."""
    client: TaskClient
    engine: Engine

    def close(self) -> None:
        """Release the channel and the database connections."""
        self.client.close()
        self.engine.dispose()


def create_beat(config: BeatConfig) -> BeatProcess:
    """Wire the lease, the API client and the jobs for ``config``; nothing runs yet."""
    engine = make_engine(config.database_url, pool_size=1)
    client = TaskClient(
        config.api_address,
        token_file=config.token_file,
        ca_file=config.api_ca_file,
        timeout_seconds=config.submit_timeout_seconds,
    )
    # The suffix keeps two processes apart even when they were given one name: two holders
    # of one id would both renew the lease, and both lead.
    holder = f"{config.holder}/{uuid.uuid4().hex[:8]}"
    lease = LeaderLease(engine, LEASE_NAME, holder, ttl_seconds=config.lease_ttl_seconds)
    audit = AuditWriter(engine)
    beat = Beat(
        config.schedule,
        lease,
        lambda job, request_id: submit_job(client, JOBS[job], request_id),
        renew_seconds=config.renew_seconds,
        audit=lambda job, summary, outcome: audit.record_job_run(
            subject=f"beat/{holder}", job=job, summary=summary, outcome=outcome
        ),
    )
    return BeatProcess(beat, holder, client, engine)


async def serve(config: BeatConfig) -> None:
    """Compete for the lease and fire while leading; on a stop signal give the lease up."""
    built = create_beat(config)
    metrics = start_metrics(config.metrics_address)
    stop = threading.Event()
    logging.getLogger(__name__).info(
        "beat %s: schedule %s, lease TTL %gs, renew every %gs",
        built.holder,
        ", ".join(entry.describe() for entry in config.schedule) or "(empty)",
        config.lease_ttl_seconds,
        config.renew_seconds,
    )
    runner = asyncio.ensure_future(asyncio.to_thread(built.beat.run, stop))
    ready = {"pid": os.getpid(), "holder": built.holder, "metrics_port": metrics and metrics.port}
    signalled = asyncio.ensure_future(wait_for_stop_signal(config.ready_file, ready))
    try:
        await asyncio.wait({runner, signalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        signalled.cancel()
        try:
            await runner  # releases the lease; an error of the loop surfaces here
        finally:
            built.close()
            if metrics is not None:
                await metrics.close()


def main() -> None:
    """Entry point."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = BeatConfig.from_env(jobs=frozenset(JOBS))
    except ConfigError as exc:
        sys.exit(f"workers.beat: bad configuration: {exc}")
    logging.getLogger().setLevel(config.log_level)
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()

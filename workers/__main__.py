"""``python -m workers``: a Celery worker (prefork pool) configured from the environment."""

from __future__ import annotations

import logging
import os
import sys

from core.serving import tune_malloc
from workers._config import ConfigError, WorkerConfig
from workers._multiprocess import use_private_directory


def main() -> None:
    """Entry point."""
    # Logging first, so that a deprecated variable's warning is formatted like the rest;
    # the configured level applies from the moment the configuration is read.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = WorkerConfig.from_env()
    except ConfigError as exc:
        sys.exit(f"workers: bad configuration: {exc}")
    logging.getLogger().setLevel(config.log_level)
    tune_malloc(os.environ)  # before the threads that would each get an arena
    # Before the task modules construct their metrics, and before the pool forks.
    directory = use_private_directory() if config.metrics_address else None
    from workers._registry import check_registry, load_registry

    try:
        check_registry(
            load_registry(config.task_kind_modules),
            consumer_timeout_seconds=config.consumer_timeout_seconds,
            claim_lease_seconds=config.claim_lease_seconds,
        )
    except ValueError as exc:
        sys.exit(f"workers: {exc}")
    from workers.app import app, serve_metrics  # reads the same environment

    if directory is not None:
        serve_metrics(directory)

    argv = [
        "worker",
        f"--loglevel={config.log_level}",
        f"--queues={config.task_queue}",
        f"--concurrency={config.concurrency}",
        "--pool=prefork",
    ]
    if config.worker_name:
        argv.append(f"--hostname={config.worker_name}")
    if config.without_gossip:
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    app.worker_main(argv)


if __name__ == "__main__":
    main()

"""``python -m server``: run the API server with configuration from the environment."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from core.serving import tune_malloc
from core.tls import TlsConfigError
from server._config import ConfigError, ServerConfig
from server.app import serve
from server.auth import JwksError


def main() -> None:
    """Entry point."""
    # Logging first, so that a deprecated variable's warning is formatted like the rest;
    # the configured level applies from the moment the configuration is read.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = ServerConfig.from_env()
    except ConfigError as exc:
        sys.exit(f"server: bad configuration: {exc}")
    logging.getLogger().setLevel(config.log_level)
    tune_malloc(os.environ)  # before the threads that would each get an arena
    try:
        asyncio.run(serve(config))
    except (JwksError, TlsConfigError) as exc:
        # Keys or certificates that cannot be used: refuse to start, naming the file.
        sys.exit(f"server: cannot start: {exc}")


if __name__ == "__main__":
    main()

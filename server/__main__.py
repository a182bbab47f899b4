"""``python -m server``: run the API server with configuration from the environment."""

from __future__ import annotations

import asyncio
import logging
import sys

from core.tls import TlsConfigError
from server._config import ConfigError, ServerConfig
from server.app import serve
from server.auth import JwksError


def main() -> None:
    """Entry point."""
    try:
        config = ServerConfig.from_env()
    except ConfigError as exc:
        sys.exit(f"server: bad configuration: {exc}")
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(config))
    except (JwksError, TlsConfigError) as exc:
        # Keys or certificates that cannot be used: refuse to start, naming the file.
        sys.exit(f"server: cannot start: {exc}")


if __name__ == "__main__":
    main()

"""``python -m cache_sidecar``: run the cache sidecar with configuration from the environment.

Exit status 2 when the configuration, the policy file or a TLS file is invalid (the
message on stderr names the variable, the namespace and field, or the file).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from cache_sidecar._config import Config, ConfigError
from cache_sidecar._policy import PolicyError
from cache_sidecar._server import serve
from core.tls import TlsConfigError


def main() -> int:
    """Run until SIGTERM/SIGINT; return the process exit status."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = Config.from_env()
        asyncio.run(serve(config))
    except (ConfigError, PolicyError, TlsConfigError) as exc:
        print(f"cache_sidecar: refusing to start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The cache sidecar: a Memcached-backed read cache that owns TTLs and invalidation.

Run it with ``python -m cache_sidecar`` (configuration: :class:`Config`, from
``AGENTIC_*`` environment variables). The API server talks to it through
:mod:`core.cache`.
"""

from cache_sidecar._config import Config, ConfigError
from cache_sidecar._policy import PolicyError
from cache_sidecar._server import SERVICE_NAME, CacheSidecar, create_server, serve

__all__ = [
    "SERVICE_NAME",
    "CacheSidecar",
    "Config",
    "ConfigError",
    "PolicyError",
    "create_server",
    "serve",
]

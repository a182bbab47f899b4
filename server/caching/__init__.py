"""Coherent read-through caching over the cache sidecar, for any cached resource."""

from server.caching._coherent import CoherentCache

__all__ = ["CoherentCache"]

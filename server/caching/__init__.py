"""Coherent read-through caching over the cache sidecar, for any cached resource, and the
shielded commit-invalidate-publish sequence of its writes."""

from server.caching._coherent import CoherentCache
from server.caching._writes import CoherentWrites

__all__ = ["CoherentCache", "CoherentWrites"]

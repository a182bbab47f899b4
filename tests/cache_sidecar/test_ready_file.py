"""The ready file reports the ports actually bound, metrics included, as the server's does."""

from __future__ import annotations

from devtools.memcached import Memcached
from tests._scrape import metrics_text
from tests.cache_sidecar._support import SidecarFactory


def test_metrics_port_0_picks_a_free_port_that_the_ready_file_reports(
    memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    sidecar = sidecar_factory([memcached], {"AGENTIC_CACHE_METRICS_ADDRESS": "127.0.0.1:0"})
    port = sidecar.ready["metrics_port"]
    assert isinstance(port, int)
    assert port > 0
    text = metrics_text(port)
    # The sidecar's own series, about its own node: not some other process's endpoint.
    assert f'agentic_memcached_up{{node="{memcached.address}"}} 1.0' in text, text
    assert "agentic_cache_events_connected" in text


def test_an_empty_metrics_port_turns_metrics_off(
    memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    sidecar = sidecar_factory([memcached], {"AGENTIC_CACHE_METRICS_ADDRESS": ""})
    assert sidecar.ready["metrics_port"] is None
    assert sidecar.ready["grpc_port"] > 0

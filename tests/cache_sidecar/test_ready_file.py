"""The ready file reports the address served and the ports actually bound, metrics included."""

from __future__ import annotations

from devtools.memcached import Memcached
from tests._processes import loopback_tcp
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


def test_a_unix_socket_is_reported_by_its_absolute_path_without_a_port(
    memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    sidecar = sidecar_factory([memcached])
    address = sidecar.ready["grpc_address"]
    assert address.startswith("unix:/"), address
    assert address.endswith("/run/cache.sock"), address
    assert sidecar.ready["grpc_port"] is None


def test_tcp_reports_the_port_bound_and_the_address_to_dial(
    memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    sidecar = sidecar_factory([memcached], loopback_tcp(0))
    port = sidecar.ready["grpc_port"]
    assert isinstance(port, int)
    assert port > 0
    assert sidecar.ready["grpc_address"] == f"127.0.0.1:{port}"

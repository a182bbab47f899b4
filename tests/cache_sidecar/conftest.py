"""Fixtures of the cache sidecar tests: private memcached servers and sidecar processes.

Everything binds 127.0.0.1; every process started here is stopped (sidecars with
SIGTERM, which must exit 0) when the test ends, whatever happened.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from devtools.memcached import Memcached
from devtools.ports import free_port
from tests._processes import Service, start_sidecar
from tests.cache_sidecar._support import TEST_POLICY, MemcachedFactory, SidecarFactory


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """The test policy (namespaces projects, project_lists, small, race)."""
    path = tmp_path / "policy.toml"
    path.write_text(TEST_POLICY)
    return path


@pytest.fixture
def memcached_factory(tmp_path: Path) -> Iterator[MemcachedFactory]:
    """Start private memcached servers on free ports; all are stopped afterwards."""
    started: list[Memcached] = []

    def make() -> Memcached:
        node = Memcached(free_port(), tmp_path / f"memcached-{len(started)}.log")
        started.append(node)
        node.start()
        return node

    yield make
    for node in started:
        node.stop()


@pytest.fixture
def memcached(memcached_factory: MemcachedFactory) -> Memcached:
    """One private memcached."""
    return memcached_factory()


@pytest.fixture
def sidecar_factory(tmp_path: Path, policy_file: Path) -> Iterator[SidecarFactory]:
    """Start sidecar processes; each must exit 0 on SIGTERM at the end of the test."""
    started: list[Service] = []

    def make(servers: Sequence[Memcached], env: Mapping[str, str] | None = None) -> Service:
        service = start_sidecar(tmp_path / f"sidecar-{len(started)}", servers, policy_file, env)
        started.append(service)
        return service

    yield make
    failures = []
    for service in started:
        code = service.stop()
        if code != 0:
            failures.append(f"sidecar exited with {code} on SIGTERM:\n{service.log()}")
    assert not failures, "\n".join(failures)

"""GetCacheStats and ClearCacheNamespace against a real sidecar on a real memcached.

The stack (memcached, sidecar, API server) is the cached-reads tests'. The figures come
from the sidecar, so the test reads them both ways: through
AdminService on the API server and straight from the sidecar's own Stats, and checks
that a clear makes the next read of a cached project a miss. One backend (SQLite): the
database plays no part in what is checked here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from agentic.admin.v1 import admin_pb2 as pb
from agentic.admin.v1 import admin_pb2_grpc
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc

from tests.server.projects.test_cached_reads import Stack, stack  # noqa: F401 - fixture

TIMEOUT = 10.0


@dataclass
class Admin:
    """AdminService on the stack's API server, and the sidecar's own CacheService."""

    stack: Stack
    admin: admin_pb2_grpc.AdminServiceStub
    projects: projects_pb2_grpc.ProjectServiceStub
    sidecar_stub: cache_pb2_grpc.CacheServiceStub


@pytest.fixture
def ops(stack: Stack) -> Iterator[Admin]:  # noqa: F811 - the imported fixture
    with grpc.insecure_channel(f"127.0.0.1:{stack.sidecar_port}") as sidecar:
        yield Admin(
            stack,
            admin_pb2_grpc.AdminServiceStub(stack.channel),
            stack.projects,
            cache_pb2_grpc.CacheServiceStub(sidecar),
        )


def projects_figures(ops: Admin) -> pb.CacheNamespaceStats:
    stats = ops.admin.GetCacheStats(pb.GetCacheStatsRequest(), timeout=TIMEOUT)
    assert stats.cache_enabled
    found: list[pb.CacheNamespaceStats] = [n for n in stats.namespaces if n.namespace == "projects"]
    assert len(found) == 1
    return found[0]


def read(ops: Admin, project_id: str) -> None:
    ops.projects.GetProject(ppb.GetProjectRequest(id=project_id), timeout=TIMEOUT)


def test_cache_stats_are_the_sidecars_and_a_clear_makes_the_next_read_a_miss(
    ops: Admin,
) -> None:
    request = ppb.CreateProjectRequest(project=ppb.Project(name=f"p-{uuid.uuid4().hex[:8]}"))
    project = ops.projects.CreateProject(request, timeout=TIMEOUT).project
    read(ops, project.id)  # a miss that fills
    read(ops, project.id)  # a hit
    before = projects_figures(ops)
    raw = ops.sidecar_stub.Stats(cache_pb2.StatsRequest(), timeout=TIMEOUT)
    (raw_projects,) = [n for n in raw.namespaces if n.namespace == "projects"]
    assert (before.hits, before.misses, before.stale_set_rejections) == (
        raw_projects.hits,
        raw_projects.misses,
        raw_projects.stale_set_rejections,
    )
    assert before.hits >= 1
    assert before.misses >= 1
    assert before.hit_ratio == pytest.approx(
        (before.hits + before.negative_hits) / (before.hits + before.negative_hits + before.misses)
    )
    stats = ops.admin.GetCacheStats(pb.GetCacheStatsRequest(), timeout=TIMEOUT)
    (node,) = stats.nodes
    assert node.address == ops.stack.memcached.address
    assert node.reachable
    assert node.breaker_state == pb.CACHE_BREAKER_STATE_CLOSED
    assert node.items >= 1
    assert node.bytes > 0

    read(ops, project.id)
    warm = projects_figures(ops)
    assert (warm.hits, warm.misses) == (before.hits + 1, before.misses), "not cached"

    cleared = ops.admin.ClearCacheNamespace(
        pb.ClearCacheNamespaceRequest(namespace="projects"), timeout=TIMEOUT
    )
    assert cleared.cleared
    read(ops, project.id)
    after = projects_figures(ops)
    assert (after.hits, after.misses) == (warm.hits, warm.misses + 1), "the clear did not miss"
    assert after.namespace_clears == warm.namespace_clears + 1
    read(ops, project.id)
    assert projects_figures(ops).hits == after.hits + 1, "the miss did not fill again"

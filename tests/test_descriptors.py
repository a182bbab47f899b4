"""The committed descriptor set (protos/agentic.protoset) is the whole contract, and current.

Clients without our toolchain (Node, grpcurl -protoset, any language's dynamic loader) load
this one file, so it must hold every agentic file and everything they import, resolve in an
empty descriptor pool, carry the comments, and equal what ``make descriptors`` builds now.
"""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from devtools.descriptors import EXTRA_PROTOS, PROTOSET, build
from tests._support import REPO


@pytest.fixture(scope="module")
def fresh() -> bytes:
    """A descriptor set built from protos/ now."""
    return build()


def test_committed_descriptor_set_is_current(fresh: bytes) -> None:
    assert PROTOSET.exists(), f"{PROTOSET} is missing: run `make descriptors`"
    assert PROTOSET.read_bytes() == fresh, (
        f"{PROTOSET.relative_to(REPO)} differs from the protos: run `make descriptors`"
    )


def test_the_build_is_deterministic(fresh: bytes) -> None:
    assert build() == fresh


def test_descriptor_set_is_self_contained_and_complete(fresh: bytes) -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(fresh).file
    names = [f.name for f in files]
    assert len(names) == len(set(names)), "a file appears twice"
    ours = sorted(str(p.relative_to(REPO / "protos")) for p in (REPO / "protos").rglob("*.proto"))
    assert sorted(n for n in names if n.startswith("agentic/")) == ours
    for extra in (*EXTRA_PROTOS, "buf/validate/validate.proto", "google/rpc/status.proto"):
        assert extra in names
    # An empty pool accepts the files in order only when every import precedes its user.
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    assert pool.FindMessageTypeByName("google.rpc.BadRequest").fields_by_name["field_violations"]
    service = pool.FindServiceByName("agentic.tasks.v1.TaskService")
    assert service.methods_by_name["WatchTask"].output_type.name == "WatchTaskResponse"
    # Comments travel with it (grpcurl describe, generated docs).
    for file in files:
        if file.name.startswith("agentic/") or file.name in EXTRA_PROTOS:
            assert any(loc.leading_comments for loc in file.source_code_info.location), file.name

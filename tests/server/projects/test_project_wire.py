"""The one read of a project by id (``core.projects.load_project``), shared by the API
server's cache origin and the cache warming worker, gives byte for byte the message the
server's domain path (``ProjectStore.get`` then ``to_proto``) gives: a value warmed by a
worker is the value a server read would have cached. On SQLite and PostgreSQL (time zones
and member order are where they could differ)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.db import make_engine, migrate
from core.projects import load_project
from server.projects import ProjectStore, to_proto
from tests._support import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with fresh_database(request.param, tmp_path, "p") as url:
        engine = make_engine(url, pool_size=1)
        migrate(engine)
        yield engine
        engine.dispose()


def test_the_shared_read_is_byte_identical_to_the_servers_domain_path(engine: Engine) -> None:
    store = ProjectStore(engine)
    alone, _ = store.create(name="alone", description="", owner_id="u1")
    crowded, _ = store.create(
        name="crowded", description="with members", owner_id="u2", member_ids=["zed", "amy", "bo"]
    )
    store.update(crowded.id, {"description": "changed"}, etag=crowded.etag, viewer=None)
    for project_id in (alone.id, crowded.id):
        shared = load_project(engine, project_id)
        assert shared is not None
        assert shared.SerializeToString() == to_proto(store.get(project_id)).SerializeToString()
        loaded = store.load(project_id)
        assert loaded is not None
        assert loaded.SerializeToString() == shared.SerializeToString()
    updated = load_project(engine, crowded.id)
    assert updated is not None
    assert list(updated.member_ids) == ["amy", "bo", "zed"]
    assert updated.description == "changed"
    assert load_project(engine, "00000000-0000-0000-0000-000000000000") is None
    assert store.load("00000000-0000-0000-0000-000000000000") is None

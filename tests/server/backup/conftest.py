"""The databases backup tests run on: each test once on SQLite and once on PostgreSQL
(a fresh database each, dropped afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support import postgres_database


def database(backend: str, workdir: Path, name: str) -> Iterator[str]:
    """A new, empty database of ``backend`` named ``name`` (its URL)."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'{name}.db'}"
    else:
        with postgres_database(workdir / f"pg-{name}") as url:
            yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def source(backend: str, tmp_path: Path) -> Iterator[str]:
    """The database backed up."""
    yield from database(backend, tmp_path, "source")


@pytest.fixture
def target(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database restored into."""
    yield from database(backend, tmp_path, "target")


@pytest.fixture
def spare(backend: str, tmp_path: Path) -> Iterator[str]:
    """A second empty database, for a restore that must leave it untouched."""
    yield from database(backend, tmp_path, "spare")

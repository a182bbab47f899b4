"""The databases backup tests run on: each test once on SQLite and once on PostgreSQL
(a fresh database each, dropped afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support import fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def source(backend: str, tmp_path: Path) -> Iterator[str]:
    """The database backed up."""
    with fresh_database(backend, tmp_path, "source") as url:
        yield url


@pytest.fixture
def target(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database restored into."""
    with fresh_database(backend, tmp_path, "target") as url:
        yield url


@pytest.fixture
def spare(backend: str, tmp_path: Path) -> Iterator[str]:
    """A second empty database, for a restore that must leave it untouched."""
    with fresh_database(backend, tmp_path, "spare") as url:
        yield url

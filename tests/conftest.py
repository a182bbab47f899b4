"""Fixtures shared by the whole suite: real API server processes on loopback.

``api`` runs every test that uses it twice, once against SQLite and once against
PostgreSQL, each behind its own ``python -m server`` process.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from agentic.projects.v1 import projects_pb2_grpc
from sqlalchemy import Engine

from core.db import make_engine
from tests._identity import SERVICE_ACCOUNT_LIMITS, authorized_channel
from tests._processes import Service, start_service
from tests._support import fresh_database


@dataclass
class Api:
    """A running API server, a channel to it, and direct access to its database."""

    service: Service
    channel: grpc.Channel
    projects: projects_pb2_grpc.ProjectServiceStub
    engine: Engine
    backend: str


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    """A scratch directory for the whole run."""
    with tempfile.TemporaryDirectory(prefix="agentic-test-") as path:
        yield Path(path)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, session_dir: Path) -> Iterator[str]:
    """A fresh database per backend: a SQLite file, or a new PostgreSQL database."""
    with fresh_database(request.param, session_dir, "api") as url:
        yield url


@pytest.fixture(scope="session")
def api(database_url: str, session_dir: Path) -> Iterator[Api]:
    """The API server on ``database_url``, started once per backend."""
    env = {
        "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
        "DATABASE_URL": database_url,
        "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
        "AGENTIC_CACHE_ADDRESS": "",
        # The suite's Administrator makes every fixture object.
        **SERVICE_ACCOUNT_LIMITS,
    }
    service = start_service("server", env, session_dir / "api")
    channel = authorized_channel(service.address)
    engine = make_engine(database_url, pool_size=2)
    try:
        yield Api(
            service=service,
            channel=channel,
            projects=projects_pb2_grpc.ProjectServiceStub(channel),
            engine=engine,
            backend=database_url.split(":", 1)[0],
        )
    finally:
        channel.close()
        engine.dispose()
        code = service.stop()
        assert code == 0, f"server exited with {code} on SIGTERM:\n{service.log()}"

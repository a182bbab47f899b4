"""ArtifactService under test: real API servers on a file store and on an S3 store.

``target`` runs a test once per object store, each on both databases of ``api``: the file
store is the ``api`` server's own (``<session_dir>/api/objects``); the S3 store is a second
server process on the same database, storing in a bucket of one moto S3 server
(``devtools.s3``) shared by the session. ``limited`` is a server on small limits (quota,
open uploads, artifact size, a short writer lease), again per store, for the tests of the
limits, concurrency and expiry; ``limited_database`` is one on each database, for the
limits the database enforces. Each test makes its own projects (and, where a limit is
counted per principal, its own principal), so tests share servers but no state.

``ArtifactApi.traces(artifact_id)`` lists what the store holds of an artifact, read behind
the server's back: every file under the store directory (``.staging`` included), or every
S3 object, tail and multipart upload, whose name holds the artifact id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from sqlalchemy import Engine, text

from core.db import make_engine
from devtools.s3 import S3Server
from tests._identity import ADMIN, SERVICE_ACCOUNT_LIMITS, Role, authorized_channel
from tests._processes import Service, start_service
from tests._support import postgres_database
from tests.conftest import Api

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

TIMEOUT = 30.0
MIB = 1024 * 1024
PART_BYTES = 5 * MIB
"""The smallest durable step the server accepts: S3's smallest part, and the file store's
bytes between fsyncs (so a test crosses several checkpoints with a few MiB)."""
S3_PREFIX = "objects"

# The limits of the ``limited`` servers.
LIMIT_MAX_BYTES = 16 * MIB
LIMIT_QUOTA_BYTES = 7 * MIB
LIMIT_OPEN_UPLOADS = 3
LIMIT_LEASE_SECONDS = 4.0

Stub = artifacts_pb2_grpc.ArtifactServiceStub


@dataclass
class ArtifactApi:
    """One API server's ArtifactService, how to make callers and projects, and its store."""

    name: str
    """Which database and store, e.g. ``sqlite-file`` (for failure messages)."""
    store: str
    """``file`` or ``s3``."""
    service: Service
    env: dict[str, str]
    """What the server was started with beyond the defaults (DATABASE_URL, the store)."""
    traces: Callable[[str], list[str]]
    """What the store holds whose name contains the given id (see the module docstring)."""
    stray_files: Callable[[], list[str]]
    """Files anywhere under the server's working directory but outside the store's own
    tree of object keys (its ``projects/`` and ``.staging/``): the check that a client's
    name never became a path."""
    engine: Engine
    """The server's database, to observe what the API does not show (a writer's lease)."""
    root: Path | None
    """The file store's directory (None for S3)."""
    channels: dict[tuple[str, tuple[Role, ...]], grpc.Channel] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """host:port of the server."""
        return self.service.address

    def channel(
        self, subject: str = ADMIN, roles: tuple[Role, ...] = (Role.ADMINISTRATOR,)
    ) -> grpc.Channel:
        """A channel whose calls carry a token of ``subject`` (one per identity, reused)."""
        key = (subject, roles)
        if key not in self.channels:
            self.channels[key] = authorized_channel(self.address, subject, roles)
        return self.channels[key]

    def stub(
        self, subject: str | None = None, roles: tuple[Role, ...] = (Role.ADMINISTRATOR,)
    ) -> Stub:
        """An ArtifactService stub for ``subject`` with ``roles``; no subject: a new
        principal of its own, so that what one test leaves open (uploads count against a
        per-principal limit) never reaches another test on a shared server."""
        return artifacts_pb2_grpc.ArtifactServiceStub(
            self.channel(subject or new_subject("admin"), roles)
        )

    def project(self, owner: str = ADMIN, members: tuple[str, ...] = ()) -> str:
        """A new project of ``owner`` (made by the Administrator): its id."""
        stub = projects_pb2_grpc.ProjectServiceStub(self.channel())
        created = stub.CreateProject(
            ppb.CreateProjectRequest(
                project=ppb.Project(
                    name=f"a-{uuid.uuid4().hex[:12]}", owner_id=owner, member_ids=list(members)
                )
            ),
            timeout=TIMEOUT,
        )
        return str(created.project.id)

    def writer_holds(self, upload_name: str) -> bool:
        """Whether a Write stream holds the upload's writer lease (read from the table)."""
        query = text("SELECT writer_id FROM artifacts WHERE upload_id = :upload_id")
        with self.engine.connect() as connection:
            writer = connection.execute(
                query, {"upload_id": upload_name.removeprefix("uploads/")}
            ).scalar()
        return writer is not None

    def close(self) -> None:
        """Close every channel made here."""
        for channel in self.channels.values():
            channel.close()
        self.channels.clear()


def new_subject(prefix: str = "user") -> str:
    """A principal nobody else uses (limits are counted per principal)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- the stores, seen from outside the server ------------------------------------------------


def _file_traces(root: Path) -> Callable[[str], list[str]]:
    def traces(artifact_id: str) -> list[str]:
        if not root.exists():
            return []
        return sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if artifact_id in str(p) and p.is_file()
        )

    return traces


def _stray_files(workdir: Path, root: Path) -> Callable[[], list[str]]:
    """Files under ``workdir`` that are neither the server's own (logs, ready files, the
    SQLite database) nor objects or staged uploads under ``root``."""

    def stray() -> list[str]:
        found = []
        for path in workdir.rglob("*"):
            if not path.is_file():
                continue
            if path.is_relative_to(root / "projects") or path.is_relative_to(root / ".staging"):
                continue
            if path.parent == workdir and path.suffix in {".log", ".json", ".db"}:
                continue
            if path.name.endswith((".db-wal", ".db-shm", ".db-journal")):
                continue
            found.append(str(path.relative_to(workdir)))
        return sorted(found)

    return stray


def _s3_traces(client: S3Client, bucket: str) -> Callable[[str], list[str]]:
    def traces(artifact_id: str) -> list[str]:
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            found += [item["Key"] for item in page.get("Contents", [])]
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        found += [f"multipart upload of {u['Key']}" for u in uploads]
        return sorted(name for name in found if artifact_id in name)

    return traces


def _s3_stray(client: S3Client, bucket: str) -> Callable[[], list[str]]:
    def stray() -> list[str]:
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys += [item["Key"] for item in page.get("Contents", [])]
        allowed = (f"{S3_PREFIX}/projects/", f"{S3_PREFIX}/.staging/projects/")
        return sorted(k for k in keys if not k.startswith(allowed))

    return stray


def _server_env(database_url: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
        "DATABASE_URL": database_url,
        "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
        "AGENTIC_CACHE_ADDRESS": "",
        "AGENTIC_OBJECT_STORE_PART_BYTES": str(PART_BYTES),
        **SERVICE_ACCOUNT_LIMITS,
        **extra,
    }


def _file_api(name: str, database_url: str, workdir: Path, extra: dict[str, str]) -> ArtifactApi:
    root = (workdir / "objects").resolve()
    env = _server_env(database_url, {"AGENTIC_OBJECT_STORE_URL": root.as_uri(), **extra})
    service = start_service("server", env, workdir)
    return ArtifactApi(
        name=name,
        store="file",
        service=service,
        env=env,
        traces=_file_traces(root),
        stray_files=_stray_files(workdir, root),
        engine=make_engine(database_url, pool_size=1),
        root=root,
    )


def _s3_api(
    name: str, database_url: str, workdir: Path, s3: S3Server, extra: dict[str, str]
) -> ArtifactApi:
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(bucket)
    env = _server_env(
        database_url,
        {**s3.env(), "AGENTIC_OBJECT_STORE_URL": f"s3://{bucket}/{S3_PREFIX}", **extra},
    )
    service = start_service("server", env, workdir)
    client = s3.client()
    return ArtifactApi(
        name=name,
        store="s3",
        service=service,
        env=env,
        traces=_s3_traces(client, bucket),
        stray_files=_s3_stray(client, bucket),
        engine=make_engine(database_url, pool_size=1),
        root=None,
    )


def _stop(target: ArtifactApi) -> None:
    target.close()
    target.engine.dispose()
    code = target.service.stop()
    assert code == 0, f"{target.name} server exited with {code} on SIGTERM:\n{target.service.log()}"


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the session; each API server on it gets its own bucket."""
    with S3Server(log_path=tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@pytest.fixture(scope="session")
def file_api(api: Api, database_url: str, session_dir: Path) -> Iterator[ArtifactApi]:
    """The ``api`` server (per database) as an ArtifactApi on its file store."""
    root = (session_dir / "api" / "objects").resolve()
    target = ArtifactApi(
        name=f"{api.backend}-file",
        store="file",
        service=api.service,
        env={"DATABASE_URL": database_url, "AGENTIC_OBJECT_STORE_URL": root.as_uri()},
        traces=_file_traces(root),
        stray_files=_stray_files(session_dir / "api", root),
        engine=api.engine,
        root=root,
    )
    yield target
    target.close()  # the server and the engine are api's


@pytest.fixture(scope="session")
def s3_api(
    api: Api, database_url: str, session_dir: Path, s3_server: S3Server
) -> Iterator[ArtifactApi]:
    """A second server on ``api``'s database, storing in an S3 bucket."""
    target = _s3_api(
        f"{api.backend}-s3", database_url, session_dir / f"api-s3-{api.backend}", s3_server, {}
    )
    yield target
    _stop(target)


@pytest.fixture(params=["file", "s3"])
def target(request: pytest.FixtureRequest, api: Api) -> ArtifactApi:
    """The ArtifactService on each store (and, through ``api``, each database)."""
    fixture = "file_api" if request.param == "file" else "s3_api"
    found: ArtifactApi = request.getfixturevalue(fixture)
    return found


LIMITS_ENV = {
    "AGENTIC_ARTIFACT_MAX_BYTES": str(LIMIT_MAX_BYTES),
    "AGENTIC_PROJECT_QUOTA_BYTES": str(LIMIT_QUOTA_BYTES),
    "AGENTIC_MAX_OPEN_UPLOADS": str(LIMIT_OPEN_UPLOADS),
    "AGENTIC_UPLOAD_WRITER_LEASE_SECONDS": str(LIMIT_LEASE_SECONDS),
}


@pytest.fixture(scope="session")
def limited_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactApi]:
    """A server on small limits (SQLite, file store)."""
    workdir = tmp_path_factory.mktemp("limited-file")
    target = _file_api("limited-file", f"sqlite:///{workdir / 'api.db'}", workdir, LIMITS_ENV)
    yield target
    _stop(target)


@pytest.fixture(scope="session")
def limited_s3(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[ArtifactApi]:
    """A server on small limits (SQLite, S3 store)."""
    workdir = tmp_path_factory.mktemp("limited-s3")
    url = f"sqlite:///{workdir / 'api.db'}"
    target = _s3_api("limited-s3", url, workdir, s3_server, LIMITS_ENV)
    yield target
    _stop(target)


@pytest.fixture(scope="session")
def limited_postgresql(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactApi]:
    """A server on small limits on a PostgreSQL database of its own (file store), for the
    limits whose enforcement is the database's (concurrent creates)."""
    workdir = tmp_path_factory.mktemp("limited-postgresql")
    with postgres_database(workdir / "postgres") as url:
        target = _file_api("limited-postgresql", url, workdir, LIMITS_ENV)
        yield target
        _stop(target)


@pytest.fixture(params=["sqlite", "postgresql"])
def limited_database(request: pytest.FixtureRequest) -> ArtifactApi:
    """A small-limits server on each database (file store)."""
    fixture = "limited_file" if request.param == "sqlite" else "limited_postgresql"
    found: ArtifactApi = request.getfixturevalue(fixture)
    return found


@pytest.fixture(params=["file", "s3"])
def limited(request: pytest.FixtureRequest) -> ArtifactApi:
    """The small-limits server of each store."""
    found: ArtifactApi = request.getfixturevalue(f"limited_{request.param}")
    return found

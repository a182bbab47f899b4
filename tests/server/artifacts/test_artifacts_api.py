"""ArtifactService end to end: bytes up and down, metadata, listing, updates, deletes, cache.

Real server processes on SQLite and PostgreSQL (``api``), each on a file store and on an
S3 store (moto's server): see ``conftest.py``. Every byte comparison is against an
independent computation (hashlib over the source file, slices of the source bytes), never
against what the server reports of itself.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as pb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from google.protobuf import field_mask_pb2

from tests._identity import Role, authorized_channel
from tests._processes import Memcached, Service, free_port, start_service, start_sidecar
from tests._scrape import metric, metrics_text
from tests._status import RichStatus, rich_status
from tests._support import REPO
from tests.server.artifacts._bytestream import (
    CHUNK,
    create_upload,
    download,
    read_pieces,
    sha256_file,
    upload,
    write_bytes,
)
from tests.server.artifacts.conftest import MIB, TIMEOUT, ArtifactApi, Stub, new_subject

BIG_BYTES = 300 * MIB
DOMAIN = "agentic.artifacts.v1"


def failure(call: object, *args: object, **kwargs: object) -> RichStatus:
    """Run ``call(*args, **kwargs)``, which must fail; its decoded status (with ErrorInfo)."""

    def run() -> None:
        result = call(*args, **kwargs)  # type: ignore[operator]  # a stub method or lambda
        if isinstance(result, Iterator):
            list(result)  # a server stream fails when read

    with pytest.raises(grpc.RpcError) as info:
        run()
    decoded = rich_status(info.value)
    assert decoded.reason, f"no ErrorInfo on {decoded.code.name}: {decoded.message}"
    return decoded


def write_source(path: Path, size: int) -> str:
    """Fill ``path`` with ``size`` random bytes, a MiB at a time; their sha256 (hashlib)."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            piece = os.urandom(min(MIB, left))
            digest.update(piece)
            out.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def get(stub: Stub, artifact_id: str) -> pb.Artifact:
    artifact: pb.Artifact = stub.GetArtifact(
        pb.GetArtifactRequest(id=artifact_id), timeout=TIMEOUT
    ).artifact
    return artifact


def round_trip(stub: Stub, project: str, source: Path, digest: str, tmp_path: Path) -> pb.Artifact:
    """Upload ``source``, download it to a file; both compared with the source's size and
    sha256 (``digest``, computed as it was written)."""
    size = source.stat().st_size
    artifact = upload(stub, project, source, name=source.name)
    assert artifact.state == pb.ARTIFACT_STATE_READY
    assert (artifact.size_bytes, artifact.sha256) == (size, digest)
    copy = tmp_path / f"{source.name}.down"
    with copy.open("wb") as out:
        assert download(stub, artifact.id, out) == size
    assert copy.stat().st_size == size
    assert sha256_file(copy) == digest
    copy.unlink()
    return artifact


# --- bytes up and down -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK, 3 * CHUNK + 12_345, 11 * MIB + 777],
    ids=["0B", "1B", "one-chunk", "chunks-and-remainder", "past-two-checkpoints"],
)
def test_round_trip(target: ArtifactApi, tmp_path: Path, size: int) -> None:
    source = tmp_path / f"source-{size}.bin"
    digest = write_source(source, size)
    round_trip(target.stub(), target.project(), source, digest, tmp_path)


def test_round_trip_without_declared_size_or_sha256(target: ArtifactApi) -> None:
    stub = target.stub()
    data = os.urandom(2 * CHUNK + 99)
    created = create_upload(stub, target.project())
    assert (created.artifact.size_bytes, created.artifact.sha256) == (0, "")
    assert write_bytes(stub, created.upload_name, data) == len(data)
    artifact = get(stub, created.artifact.id)
    assert artifact.state == pb.ARTIFACT_STATE_READY
    assert (artifact.size_bytes, artifact.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert b"".join(read_pieces(stub, artifact.id)) == data


@pytest.fixture(scope="session")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """300 MiB of random bytes on disk (never whole in memory) and their sha256."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    return path, write_source(path, BIG_BYTES)


def test_round_trip_300_mib(
    target: ArtifactApi, big_source: tuple[Path, str], tmp_path: Path
) -> None:
    if not target.name.startswith("sqlite"):
        pytest.skip("300 MiB once per store: it runs on SQLite (the bytes never touch the DB)")
    source, digest = big_source
    stub = target.stub()
    artifact = round_trip(stub, target.project(), source, digest, tmp_path)
    stub.DeleteArtifact(pb.DeleteArtifactRequest(id=artifact.id), timeout=TIMEOUT)
    assert target.traces(artifact.id) == []


# --- ranged reads ----------------------------------------------------------------------------

RANGED_SIZE = 3 * CHUNK + 5


@pytest.fixture(scope="module")
def ranged(file_api: ArtifactApi) -> tuple[Stub, str, bytes]:
    """A READY artifact of 3 MiB + 5 random bytes on the file store: (stub, id, bytes)."""
    stub = file_api.stub()
    data = os.urandom(RANGED_SIZE)
    created = create_upload(stub, file_api.project(), size=len(data))
    write_bytes(stub, created.upload_name, data)
    return stub, created.artifact.id, data


@pytest.mark.parametrize(
    ("offset", "limit"),
    [
        (0, 0),
        (0, 10),
        (CHUNK - 3, 2 * CHUNK + 7),
        (CHUNK, CHUNK),
        (RANGED_SIZE - 1, 0),
        (RANGED_SIZE - 10, 100),
        (RANGED_SIZE, 0),
        (RANGED_SIZE, 5),
    ],
    ids=[
        "all",
        "start",
        "middle",
        "one-chunk",
        "last-byte",
        "limit-past-end",
        "at-end",
        "at-end-limit",
    ],
)
def test_read_range(ranged: tuple[Stub, str, bytes], offset: int, limit: int) -> None:
    stub, artifact_id, data = ranged
    pieces = read_pieces(stub, artifact_id, offset=offset, limit=limit)
    expected = data[offset : offset + limit] if limit else data[offset:]
    assert b"".join(pieces) == expected
    assert all(len(piece) <= CHUNK for piece in pieces), [len(p) for p in pieces]
    if len(expected) > CHUNK:
        assert len(pieces) >= -(-len(expected) // CHUNK)


def test_read_on_s3_is_ranged_too(s3_api: ArtifactApi) -> None:
    stub = s3_api.stub()
    data = os.urandom(2 * CHUNK + 3)
    created = create_upload(stub, s3_api.project(), size=len(data))
    write_bytes(stub, created.upload_name, data)
    for offset, limit in ((0, 0), (CHUNK + 1, 10), (len(data) - 2, 0), (len(data), 0)):
        pieces = read_pieces(stub, created.artifact.id, offset=offset, limit=limit)
        assert b"".join(pieces) == (data[offset : offset + limit] if limit else data[offset:])
        assert all(len(piece) <= CHUNK for piece in pieces)


@pytest.mark.parametrize("offset", [RANGED_SIZE + 1, -1, -(2**63)], ids=["past-end", "-1", "min"])
def test_read_offset_outside_is_out_of_range(ranged: tuple[Stub, str, bytes], offset: int) -> None:
    stub, artifact_id, _ = ranged
    f = failure(read_pieces, stub, artifact_id, offset=offset)
    assert (f.code, f.reason, f.domain) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "READ_OFFSET_OUT_OF_RANGE",
        DOMAIN,
    )


def test_negative_read_limit_is_invalid_argument(ranged: tuple[Stub, str, bytes]) -> None:
    stub, artifact_id, _ = ranged
    f = failure(read_pieces, stub, artifact_id, limit=-1)
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "read_limit" in f.violations, f.violations


def test_read_of_an_unfinished_upload_is_failed_precondition(file_api: ArtifactApi) -> None:
    stub = file_api.stub()
    created = create_upload(stub, file_api.project(), size=10)
    write_bytes(stub, created.upload_name, b"01234", finish=False)
    f = failure(read_pieces, stub, created.artifact.id)
    assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ARTIFACT_NOT_READY")


# --- metadata --------------------------------------------------------------------------------


def test_create_upload_returns_the_artifact_and_finish_makes_it_ready(
    file_api: ArtifactApi,
) -> None:
    target, subject = file_api, new_subject("admin")
    stub = target.stub(subject)
    project = target.project()
    data = b"id,title\n1,Requirement\n"
    digest = hashlib.sha256(data).hexdigest()
    request = pb.CreateUploadRequest(
        project_id=project,
        name="SRS v2.pdf",
        kind=pb.ARTIFACT_KIND_DOCUMENT,
        content_type="application/pdf",
        size_bytes=len(data),
        sha256=digest,
        work_products=["17-11", "04-04"],
    )
    created = stub.CreateUpload(request, timeout=TIMEOUT)
    artifact = created.artifact
    assert created.upload_name.startswith("uploads/")
    uuid.UUID(created.upload_name.removeprefix("uploads/"), version=4)
    uuid.UUID(artifact.id, version=4)
    assert created.upload_name != f"uploads/{artifact.id}"
    assert (artifact.project_id, artifact.name, artifact.owner_id) == (
        project,
        "SRS v2.pdf",
        subject,
    )
    assert artifact.kind == pb.ARTIFACT_KIND_DOCUMENT
    assert artifact.format == pb.DATASET_FORMAT_UNSPECIFIED
    assert artifact.content_type == "application/pdf"
    assert (artifact.size_bytes, artifact.sha256) == (len(data), digest)
    assert artifact.state == pb.ARTIFACT_STATE_UPLOADING
    assert sorted(artifact.work_products) == ["04-04", "17-11"]
    assert artifact.etag
    assert artifact.update_time == artifact.create_time
    # The default expiry, 24 h after creation.
    lifetime = artifact.expire_time.ToDatetime() - artifact.create_time.ToDatetime()
    assert abs(lifetime - timedelta(hours=24)) < timedelta(seconds=5)
    assert get(stub, artifact.id) == artifact
    status = stub.QueryWriteStatus(
        pb.QueryWriteStatusRequest(resource_name=created.upload_name), timeout=TIMEOUT
    )
    assert (status.committed_size, status.complete) == (0, False)

    assert write_bytes(stub, created.upload_name, data) == len(data)
    ready = get(stub, artifact.id)
    assert ready.state == pb.ARTIFACT_STATE_READY
    assert (ready.size_bytes, ready.sha256) == (len(data), digest)
    assert not ready.HasField("expire_time")
    assert ready.etag != artifact.etag
    assert ready.update_time.ToDatetime() >= artifact.update_time.ToDatetime()
    assert ready.failure_reason == ""
    status = stub.QueryWriteStatus(
        pb.QueryWriteStatusRequest(resource_name=created.upload_name), timeout=TIMEOUT
    )
    assert (status.committed_size, status.complete) == (len(data), True)


def test_empty_content_type_means_octet_stream(api_stub: ApiStub) -> None:
    target, stub = api_stub
    request = pb.CreateUploadRequest(
        project_id=target.project(),
        name="blob",
        kind=pb.ARTIFACT_KIND_DATASET,
        format=pb.DATASET_FORMAT_PARQUET,
    )
    artifact = stub.CreateUpload(request, timeout=TIMEOUT).artifact
    assert artifact.content_type == "application/octet-stream"
    assert artifact.format == pb.DATASET_FORMAT_PARQUET


ApiStub = tuple[ArtifactApi, Stub]


@pytest.fixture
def api_stub(file_api: ArtifactApi) -> ApiStub:
    """The file-store server of each database and an Administrator's stub on it."""
    return file_api, file_api.stub()


def _document(stub: Stub, project: str, name: str, work_products: list[str]) -> pb.Artifact:
    request = pb.CreateUploadRequest(
        project_id=project,
        name=name,
        kind=pb.ARTIFACT_KIND_DOCUMENT,
        content_type="application/pdf",
        work_products=work_products,
    )
    created = stub.CreateUpload(request, timeout=TIMEOUT)
    write_bytes(stub, created.upload_name, name.encode())
    return get(stub, created.artifact.id)


def _listed(stub: Stub, **fields: object) -> list[str]:
    response = stub.ListArtifacts(pb.ListArtifactsRequest(**fields), timeout=TIMEOUT)  # type: ignore[arg-type]  # the request's fields
    return [a.id for a in response.artifacts]


def test_list_filters_newest_first(api_stub: ApiStub) -> None:
    target, stub = api_stub
    project = target.project()
    made: list[str] = []  # in creation order
    srs = _document(stub, project, "srs.pdf", ["17-11"])
    made.append(srs.id)
    design = _document(stub, project, "design.pdf", ["04-04", "17-11"])
    made.append(design.id)
    ready = create_upload(stub, project, name="issues.csv")
    write_bytes(stub, ready.upload_name, b"a,b\n")
    made.append(ready.artifact.id)
    pending = create_upload(stub, project, name="pending.csv")
    made.append(pending.artifact.id)
    other_project = target.project()
    create_upload(stub, other_project, name="elsewhere.csv")

    newest_first = made[::-1]
    assert _listed(stub, project_id=project) == newest_first
    assert _listed(stub, project_id=project, kind=pb.ARTIFACT_KIND_DOCUMENT) == [design.id, srs.id]
    assert _listed(stub, project_id=project, kind=pb.ARTIFACT_KIND_DATASET) == [
        pending.artifact.id,
        ready.artifact.id,
    ]
    assert _listed(stub, project_id=project, state=pb.ARTIFACT_STATE_UPLOADING) == [
        pending.artifact.id
    ]
    assert _listed(stub, project_id=project, state=pb.ARTIFACT_STATE_READY) == [
        ready.artifact.id,
        design.id,
        srs.id,
    ]
    assert _listed(stub, project_id=project, work_product="17-11") == [design.id, srs.id]
    assert _listed(stub, project_id=project, work_product="04-04") == [design.id]
    assert _listed(stub, project_id=project, work_product="99-99") == []
    assert _listed(
        stub, project_id=project, kind=pb.ARTIFACT_KIND_DATASET, state=pb.ARTIFACT_STATE_READY
    ) == [ready.artifact.id]
    # The listed artifacts are the same as GetArtifact's.
    listed = stub.ListArtifacts(pb.ListArtifactsRequest(project_id=project), timeout=TIMEOUT)
    assert {a.id: a for a in listed.artifacts}[design.id] == get(stub, design.id)


def test_list_pages_with_tokens(api_stub: ApiStub) -> None:
    target, stub = api_stub
    project = target.project()
    uploads = [create_upload(stub, project, name=f"d{i}.csv") for i in range(5)]
    made = [created.artifact.id for created in uploads]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stub.ListArtifacts(
            pb.ListArtifactsRequest(project_id=project, page_size=2, page_token=token),
            timeout=TIMEOUT,
        )
        assert len(page.artifacts) <= 2
        seen += [a.id for a in page.artifacts]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == made[::-1]
    assert pages == 3

    first = stub.ListArtifacts(
        pb.ListArtifactsRequest(project_id=project, page_size=1), timeout=TIMEOUT
    )
    assert first.next_page_token
    for other_filter in (
        {"kind": pb.ARTIFACT_KIND_DOCUMENT},
        {"state": pb.ARTIFACT_STATE_READY},
        {"work_product": "17-11"},
        {"project_id": target.project()},
    ):
        fields: dict[str, object] = {"project_id": project, **other_filter}
        f = failure(
            stub.ListArtifacts,
            pb.ListArtifactsRequest(page_token=first.next_page_token, **fields),  # type: ignore[arg-type]  # the request's fields
            timeout=TIMEOUT,
        )
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT, other_filter
        assert "page_token" in f.violations, f.violations
    f = failure(
        stub.ListArtifacts,
        pb.ListArtifactsRequest(project_id=project, page_token="not-a-token"),
        timeout=TIMEOUT,
    )
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in f.violations


def test_update_name_and_work_products_with_etags(api_stub: ApiStub) -> None:
    target, stub = api_stub
    project = target.project()
    doc = _document(stub, project, "plan.pdf", ["08-52"])

    def update(paths: list[str], etag: str = "", **fields: object) -> pb.Artifact:
        request = pb.UpdateArtifactRequest(
            id=doc.id,
            artifact=pb.Artifact(**fields),  # type: ignore[arg-type]  # the message's fields
            update_mask=field_mask_pb2.FieldMask(paths=paths),
            etag=etag,
        )
        updated: pb.Artifact = stub.UpdateArtifact(request, timeout=TIMEOUT).artifact
        return updated

    renamed = update(["name"], etag=doc.etag, name="plan v2.pdf", work_products=["17-11"])
    assert renamed.name == "plan v2.pdf"
    assert list(renamed.work_products) == ["08-52"], "only the masked fields change"
    assert renamed.etag != doc.etag
    assert renamed.update_time.ToDatetime() >= doc.update_time.ToDatetime()
    assert (renamed.size_bytes, renamed.sha256, renamed.state) == (
        doc.size_bytes,
        doc.sha256,
        doc.state,
    )
    assert get(stub, doc.id) == renamed

    stale = failure(
        stub.UpdateArtifact,
        pb.UpdateArtifactRequest(
            id=doc.id,
            artifact=pb.Artifact(name="lost update"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            etag=doc.etag,
        ),
        timeout=TIMEOUT,
    )
    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert get(stub, doc.id) == renamed

    both = update(["work_products", "name"], name="plan v3.pdf", work_products=["17-11", "04-04"])
    assert (both.name, sorted(both.work_products)) == ("plan v3.pdf", ["04-04", "17-11"])
    cleared = update(["work_products"], etag=both.etag)
    assert list(cleared.work_products) == []
    assert _listed(stub, project_id=project, work_product="17-11") == []


def test_update_rules(api_stub: ApiStub) -> None:
    target, stub = api_stub
    project = target.project()
    dataset = create_upload(stub, project, name="table.csv").artifact

    def update(artifact_id: str, paths: list[str], artifact: pb.Artifact) -> RichStatus:
        return failure(
            stub.UpdateArtifact,
            pb.UpdateArtifactRequest(
                id=artifact_id, artifact=artifact, update_mask=field_mask_pb2.FieldMask(paths=paths)
            ),
            timeout=TIMEOUT,
        )

    f = update(dataset.id, ["work_products"], pb.Artifact(work_products=["17-11"]))
    assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_DOCUMENT")
    for bad_name in ("", "x" * 201, "line\nbreak", "nul\x00"):
        f = update(dataset.id, ["name"], pb.Artifact(name=bad_name))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "artifact.name" in f.violations, f.violations
    for path in ("size_bytes", "state", "project_id"):
        f = update(dataset.id, [path], pb.Artifact())
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT
        assert any(k.startswith("update_mask") for k in f.violations), f.violations
    f = update(dataset.id, [], pb.Artifact(name="x"))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    f = update(str(uuid.uuid4()), ["name"], pb.Artifact(name="x"))
    assert (f.code, f.reason) == (grpc.StatusCode.NOT_FOUND, "ARTIFACT_NOT_FOUND")
    assert get(stub, dataset.id) == dataset


# --- deletes ---------------------------------------------------------------------------------


def test_delete_removes_the_object(target: ArtifactApi) -> None:
    stub = target.stub()
    project = target.project()
    data = os.urandom(CHUNK + 17)
    created = create_upload(stub, project, size=len(data))
    write_bytes(stub, created.upload_name, data)
    artifact = get(stub, created.artifact.id)
    assert target.traces(artifact.id), "the object should be in the store"

    stale = failure(
        stub.DeleteArtifact,
        pb.DeleteArtifactRequest(id=artifact.id, etag=created.artifact.etag),
        timeout=TIMEOUT,
    )
    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert b"".join(read_pieces(stub, artifact.id)) == data

    stub.DeleteArtifact(
        pb.DeleteArtifactRequest(id=artifact.id, etag=artifact.etag), timeout=TIMEOUT
    )
    assert target.traces(artifact.id) == []
    for call in (
        lambda: get(stub, artifact.id),
        lambda: read_pieces(stub, artifact.id),
        lambda: stub.DeleteArtifact(pb.DeleteArtifactRequest(id=artifact.id), timeout=TIMEOUT),
    ):
        f = failure(call)
        assert (f.code, f.reason) == (grpc.StatusCode.NOT_FOUND, "ARTIFACT_NOT_FOUND")
    assert artifact.id not in _listed(stub, project_id=project)
    f = failure(write_bytes, stub, created.upload_name, b"")
    assert (f.code, f.reason) == (grpc.StatusCode.NOT_FOUND, "UPLOAD_NOT_FOUND")


def test_delete_of_an_unfinished_upload_removes_its_staged_bytes(target: ArtifactApi) -> None:
    stub = target.stub()
    created = create_upload(stub, target.project(), size=12 * MIB)
    # Past one 5 MiB part and a remainder: on S3 a multipart upload with a part and a tail.
    data = os.urandom(6 * MIB + 3)
    assert write_bytes(stub, created.upload_name, data, finish=False) == len(data)
    status = stub.QueryWriteStatus(
        pb.QueryWriteStatusRequest(resource_name=created.upload_name), timeout=TIMEOUT
    )
    assert status.committed_size == len(data)
    assert target.traces(created.artifact.id), "the staged bytes should be in the store"

    stub.DeleteArtifact(pb.DeleteArtifactRequest(id=created.artifact.id), timeout=TIMEOUT)
    assert target.traces(created.artifact.id) == []
    for call in (
        lambda: write_bytes(stub, created.upload_name, b"more", offset=len(data)),
        lambda: stub.QueryWriteStatus(
            pb.QueryWriteStatusRequest(resource_name=created.upload_name), timeout=TIMEOUT
        ),
    ):
        f = failure(call)
        assert (f.code, f.reason) == (grpc.StatusCode.NOT_FOUND, "UPLOAD_NOT_FOUND")


# --- reads through the cache sidecar ---------------------------------------------------------


POLICY = REPO / "cache_sidecar" / "namespaces.toml"  # the shipped policy


class CachedStack:
    """memcached <- sidecar <- API server (SQLite, file store), each a real process."""

    def __init__(self, workdir: Path) -> None:
        self.memcached = Memcached(free_port(), workdir / "memcached.log")
        self.memcached.start()
        self.sidecar: Service | None = None
        self.server: Service | None = None
        try:
            self.sidecar = start_sidecar(workdir / "sidecar", [self.memcached], POLICY)
            self.server = start_service(
                "server",
                {
                    "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
                    "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
                    "DATABASE_URL": f"sqlite:///{workdir / 'api.db'}",
                    "AGENTIC_CACHE_ADDRESS": self.sidecar.address,
                    "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
                },
                workdir / "api",
            )
        except BaseException:
            self.stop()
            raise
        self.channel = authorized_channel(self.server.address)
        self.stub = artifacts_pb2_grpc.ArtifactServiceStub(self.channel)

    def origin_loads(self) -> float:
        """Artifact reads the cache did not answer (the server's own counter)."""
        assert self.server is not None
        port = self.server.ready["metrics_port"]
        text = metrics_text(port)
        return metric(text, "agentic_origin_loads_total", resource="artifact")

    def stop(self) -> None:
        if self.server is not None:
            self.channel.close()
            assert self.server.stop() == 0, self.server.log()
        if self.sidecar is not None:
            self.sidecar.stop()
        self.memcached.stop()


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CachedStack]:
    stack = CachedStack(tmp_path_factory.mktemp("cached"))
    try:
        yield stack
    finally:
        stack.stop()


def _project_on(stack: CachedStack) -> str:
    from agentic.projects.v1 import projects_pb2 as ppb
    from agentic.projects.v1 import projects_pb2_grpc

    created = projects_pb2_grpc.ProjectServiceStub(stack.channel).CreateProject(
        ppb.CreateProjectRequest(project=ppb.Project(name=f"c-{uuid.uuid4().hex[:10]}")),
        timeout=TIMEOUT,
    )
    return str(created.project.id)


def test_get_reads_through_the_cache(cached: CachedStack) -> None:
    stub = cached.stub
    created = create_upload(stub, _project_on(cached))
    before = cached.origin_loads()
    for _ in range(10):
        assert get(stub, created.artifact.id) == created.artifact
    assert cached.origin_loads() - before == 1, "nine of ten reads should be cache hits"


def test_get_after_each_write_never_returns_the_old_state(cached: CachedStack) -> None:
    stub = cached.stub
    project = _project_on(cached)
    for round_ in range(5):
        created = create_upload(stub, project, name=f"r{round_}.csv")
        artifact_id = created.artifact.id
        assert get(stub, artifact_id).state == pb.ARTIFACT_STATE_UPLOADING  # cached

        write_bytes(stub, created.upload_name, b"x" * (round_ + 1))
        ready = get(stub, artifact_id)
        assert ready.state == pb.ARTIFACT_STATE_READY, f"round {round_}: finish not seen"
        assert ready.size_bytes == round_ + 1
        assert get(stub, artifact_id) == ready  # and cached again

        renamed = stub.UpdateArtifact(
            pb.UpdateArtifactRequest(
                id=artifact_id,
                artifact=pb.Artifact(name=f"renamed-{round_}.csv"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            timeout=TIMEOUT,
        ).artifact
        assert get(stub, artifact_id) == renamed, f"round {round_}: rename not seen"

        stub.DeleteArtifact(pb.DeleteArtifactRequest(id=artifact_id), timeout=TIMEOUT)
        f = failure(get, stub, artifact_id)
        assert f.code == grpc.StatusCode.NOT_FOUND, f"round {round_}: delete not seen"


def test_cached_artifacts_are_checked_for_reach_like_database_reads(cached: CachedStack) -> None:
    stub = cached.stub
    created = create_upload(stub, _project_on(cached))
    get(stub, created.artifact.id)  # cached by the Administrator's read
    assert cached.server is not None
    channel = authorized_channel(cached.server.address, "cache-stranger", (Role.TECHNICAL_LEAD,))
    try:
        stranger = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        f = failure(get, stranger, created.artifact.id)
        assert (f.code, f.reason) == (grpc.StatusCode.NOT_FOUND, "ARTIFACT_NOT_FOUND")
    finally:
        channel.close()

"""Uploads cut at random offsets resume from QueryWriteStatus.committed_size, to the byte.

Fifty cuts on the file store (and ten on an S3 store, a moto server process), at offsets
drawn from one seeded RNG: the seed is in every failure message, and
``AGENTIC_TEST_SEED=<seed>`` replays a run. A cut is one of

- a client cancel (``Write.future(...).cancel()``: RST_STREAM, never a half-close) on a
  live server, either *settled* (the server has appended every byte sent: it must commit
  exactly the cut) or *racing* (cancelled the moment the last byte left the client, while
  the server is still writing: it must commit exactly what it appended, read from its
  ``agentic_artifact_uploaded_bytes_total`` counter);
- a kill -9 of the server mid-stream, then a new server process on the same database and
  store, also settled (it may lose less than one part: AGENTIC_OBJECT_STORE_PART_BYTES) or
  racing. The resuming client retries ABORTED ``UPLOAD_BUSY`` while the dead stream's
  lease lapses (1 s here), with a bounded backoff.

Every query's committed_size is at least the last one and at most the bytes sent. Each
upload then ends with a stream that writes the rest without finishing and a stream that
only finishes, so the finish is observed on its own: while the server kept its running
hash (client cancels only) it must not read the object back; after a restart it must (the
cold path), seen as the server's read bytes (``rchar`` in /proc/<pid>/io) on the file
store and as GETs of the object in moto's request log on S3. The cold path must still
catch a wrong declared sha256 (DATA_LOSS ``SHA256_MISMATCH``). Finally the artifact is
READY with the source's sha256 (hashlib over the source file), and the bytes read back
hash to it too.

Every stream of a cut first sends one chunk and waits until the server has appended it:
the stream is then known to hold the upload's lease, so a cut always cuts a live stream
(never one the server refused as busy).
"""

from __future__ import annotations

import enum
import hashlib
import os
import random
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as pb
from agentic.artifacts.v1 import artifacts_pb2_grpc

from devtools.s3 import S3Server
from tests._identity import metadata
from tests._scrape import metrics_text
from tests._status import rich_status
from tests._support import wait_for
from tests.server.artifacts._bytestream import create_upload, sha256_file, write_requests
from tests.server.artifacts._server import TIMEOUT, ArtifactServer

SEED = int(os.environ.get("AGENTIC_TEST_SEED") or random.SystemRandom().randrange(2**32))
KIB = 1024
MIB = 1024 * KIB
PART = 5 * MIB
"""The server's durable step (S3's smallest part): a checkpoint every 5 MiB."""
LEASE_SECONDS = 1.0
FILE_SIZE = 32 * MIB + 4321  # six checkpoints and a remainder
S3_SIZE = 16 * MIB + 1234
BUSY_DEADLINE_SECONDS = 3 * LEASE_SECONDS + 10
"""A resuming stream gives up on ABORTED UPLOAD_BUSY after this long (the lease lapses
after LEASE_SECONDS; the rest is slack for a slow machine)."""

Stub = artifacts_pb2_grpc.ArtifactServiceStub


def _replay() -> str:
    return f"seed {SEED} (AGENTIC_TEST_SEED={SEED} replays this run)"


class Cut(enum.Enum):
    """How a stream is cut."""

    SETTLED_CANCEL = "settled cancel"
    RACING_CANCEL = "racing cancel"
    SETTLED_KILL = "settled kill"
    RACING_KILL = "racing kill"

    @property
    def kills(self) -> bool:
        return self in (Cut.SETTLED_KILL, Cut.RACING_KILL)

    @property
    def settled(self) -> bool:
        return self in (Cut.SETTLED_CANCEL, Cut.SETTLED_KILL)


@dataclass
class _Gates:
    """The events between a Write stream's request generator and the test."""

    started: threading.Event = field(default_factory=threading.Event)
    """The first chunk was handed to gRPC."""
    go: threading.Event = field(default_factory=threading.Event)
    """Send the rest."""
    reached: threading.Event = field(default_factory=threading.Event)
    """Everything up to the stop offset was handed to gRPC."""
    release: threading.Event = field(default_factory=threading.Event)
    """A held stream may return now (after a cancel: without a half-close)."""


@dataclass
class _Stream:
    """A Write stream in flight."""

    call: grpc.Future
    gates: _Gates


@dataclass
class Rig:
    """One upload path under test: a restartable server, a client, what they showed."""

    server: ArtifactServer
    source: Path
    rng: random.Random
    s3: S3Server | None = None
    channel: grpc.Channel | None = None
    stub: Stub | None = None
    """On the plain channel: every call passes ``metadata=metadata()``."""
    authorized: Stub | None = None
    """On a channel that adds the token (for helpers that pass no metadata)."""
    busy_retries: int = 0
    behind: int = 0
    """Racing cuts that found the server behind the client (it had not appended all sent)."""
    restarts: list[float] = field(default_factory=list)
    """Seconds from each kill to the new server's first answer."""
    finishes: list[tuple[str, float]] = field(default_factory=list)
    """The path each finish took (warm or cold) and its seconds."""

    # -- the server, seen from outside ---------------------------------------------------

    def connect(self) -> Stub:
        """A plain channel to the current server, the token as call metadata on each call.

        Not ``authorized_channel``: the future of a call through an intercepted channel
        does not pass ``cancel()`` on to the call.
        """
        if self.channel is not None:
            self.channel.close()
        assert self.server.service is not None
        self.channel = grpc.insecure_channel(self.server.service.address)
        self.stub = artifacts_pb2_grpc.ArtifactServiceStub(self.channel)
        self.authorized = self.server.stub()  # closed by the server's stop()
        return self.stub

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()

    @property
    def pid(self) -> int:
        assert self.server.service is not None
        return self.server.service.process.pid

    def uploaded_bytes(self) -> int:
        """The server's count of bytes it appended to uploads (its Prometheus counter)."""
        assert self.server.service is not None
        port = self.server.service.ready["metrics_port"]
        body = metrics_text(port)
        found = re.search(r"^agentic_artifact_uploaded_bytes_total (\S+)$", body, re.MULTILINE)
        assert found, "the server exports no agentic_artifact_uploaded_bytes_total"
        return int(float(found.group(1)))

    def read_bytes(self) -> int:
        """Bytes the server process has read through read(2) and friends (its files)."""
        for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
        raise AssertionError(f"no rchar in /proc/{self.pid}/io")

    def object_gets(self, artifact_id: str) -> int:
        """GETs of the artifact's object in moto's request log (not of its staged tails,
        nor listings of its multipart upload's parts, ``?uploadId=``). werkzeug logs a
        request as it starts answering it, so a GET the server has read is in the log."""
        assert self.s3 is not None
        requests = re.findall(r"\"(?:\x1b\[[0-9;]*m)*GET (\S+) HTTP", self.s3.log())
        return sum(
            1
            for path in requests
            if artifact_id in path and ".staging" not in path and "?" not in path
        )

    # -- calls ---------------------------------------------------------------------------

    def status(self, name: str) -> pb.QueryWriteStatusResponse:
        assert self.stub is not None
        response: pb.QueryWriteStatusResponse = self.stub.QueryWriteStatus(
            pb.QueryWriteStatusRequest(resource_name=name), timeout=TIMEOUT, metadata=metadata()
        )
        return response

    def _requests(
        self, gates: _Gates, name: str, start: int, stop: int, hold: bool
    ) -> Iterator[pb.WriteRequest]:
        chunk = self.rng.randrange(64 * KIB, MIB + 1)
        with self.source.open("rb") as source:
            requests = write_requests(
                source, name, offset=start, stop=stop, finish=False, chunk=chunk
            )
            yield next(requests)
            gates.started.set()
            if not gates.go.wait(TIMEOUT):
                return
            yield from requests
            gates.reached.set()
            if hold:
                # Returning after a cancel sends nothing: gRPC half-closes only a live call.
                gates.release.wait(TIMEOUT)

    def _attempt(self, name: str, start: int, stop: int, hold: bool) -> _Stream:
        """One Write stream, returned once its first chunk is appended or it ended."""
        assert self.stub is not None
        before = self.uploaded_bytes()
        gates = _Gates()
        call = self.stub.Write.future(
            self._requests(gates, name, start, stop, hold), timeout=TIMEOUT, metadata=metadata()
        )
        wait_for(
            lambda: call.done() or (gates.started.is_set() and self.uploaded_bytes() > before),
            timeout=TIMEOUT,
            message=f"{_replay()}: the server to append the first chunk at {start} of {name}",
        )
        return _Stream(call, gates)

    def open_stream(self, name: str, start: int, stop: int, *, hold: bool = True) -> _Stream:
        """A Write stream of the source's bytes [start, stop) that holds the upload's lease:
        its first chunk is appended, the rest handed to gRPC. Held open (no half-close)
        when ``hold``, otherwise it ends without finish_write. Retries ABORTED UPLOAD_BUSY
        (a dead server's lease) with a bounded backoff."""
        deadline = time.monotonic() + BUSY_DEADLINE_SECONDS
        delay = 0.05
        while True:
            stream = self._attempt(name, start, stop, hold)
            if not stream.call.done():
                break
            error = stream.call.exception()
            stream.gates.go.set()
            stream.gates.release.set()
            busy = error is not None and error.code() == grpc.StatusCode.ABORTED
            if not busy or rich_status(error).reason != "UPLOAD_BUSY":
                raise AssertionError(f"{_replay()}: Write at {start} of {name} ended: {error}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{_replay()}: {name} still UPLOAD_BUSY after {BUSY_DEADLINE_SECONDS}s "
                    f"(the writer lease is {LEASE_SECONDS}s)"
                )
            self.busy_retries += 1
            time.sleep(delay)  # the lease lapses with time, not with an event we could await
            delay = min(delay * 2, 0.4)
        stream.gates.go.set()
        if not stream.gates.reached.wait(TIMEOUT):
            raise AssertionError(f"{_replay()}: the stream never sent its bytes up to {stop}")
        return stream

    # -- one upload ----------------------------------------------------------------------

    def cut(self, name: str, committed: int, offset: int, how: Cut) -> int:
        """Send [committed, offset), cut the stream ``how``; the new committed size."""
        where = f"{_replay()}: {how.value} of {name} at {offset} (committed {committed})"
        before = self.uploaded_bytes()
        stream = self.open_stream(name, committed, offset)
        if how.settled:
            wait_for(
                lambda: self.uploaded_bytes() - before == offset - committed,
                timeout=TIMEOUT,
                message=f"{where}: the server to append every byte sent",
            )
        if how.kills:
            killed = time.monotonic()
            self.server.kill()
            stream.gates.release.set()
            error = stream.call.exception(TIMEOUT)
            assert error is not None, f"{where}: the stream ended well although cut"
            assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{where}: {error}"
            self.server.start()  # on the same database and store
            self.connect()
            self.restarts.append(time.monotonic() - killed)
        else:
            cancelled = stream.call.cancel()
            stream.gates.release.set()
            assert cancelled, f"{where}: the stream ended before the cut: {stream.call.exception()}"
        status = self.status(name)
        got = status.committed_size
        assert not status.complete, f"{where}: complete without finish_write"
        assert committed <= got <= offset, (
            f"{where}: committed_size {got} is not between the last one and the bytes sent"
        )
        if how.kills:
            if how.settled:
                assert offset - got < PART, (
                    f"{where}: the restarted server lost {offset - got} bytes, a part is {PART}"
                )
        else:
            appended = self.uploaded_bytes() - before
            if committed + appended < offset:
                self.behind += 1
            assert got == committed + appended, (
                f"{where}: the server appended {appended} bytes but committed {got - committed}"
            )
        again = self.status(name).committed_size
        assert again == got, f"{where}: committed_size went from {got} to {again} by itself"
        return got

    def upload(self, plan: list[tuple[int, Cut]], *, sha256: str | None = None) -> None:
        """One upload of the source, cut at each (offset, how) of ``plan`` in turn, then
        written to the end and finished: READY with the source's bytes, or (with a wrong
        ``sha256`` declared) DATA_LOSS on the cold path."""
        assert self.stub is not None
        project = self.server.project()
        size = self.source.stat().st_size
        expected = sha256_file(self.source)
        declared = expected if sha256 is None else sha256
        assert self.authorized is not None
        created = create_upload(
            self.authorized, project, name="cut.bin", size=size, sha256=declared
        )
        name, artifact_id = created.upload_name, created.artifact.id
        committed = 0
        hash_kept = True  # this server hashes from offset 0
        for offset, how in plan:
            committed = self.cut(name, committed, offset, how)
            if how.kills:
                # A new server hashes only an upload it continues from offset 0.
                hash_kept = committed == 0
        rest = self.open_stream(name, committed, size, hold=False)
        ended: pb.WriteResponse = rest.call.result(TIMEOUT)
        assert ended.committed_size == size, f"{_replay()}: {name} ended at {ended}"
        self._finish(name, artifact_id, size, hash_kept, wrong=declared != expected)
        if declared != expected:
            return
        artifact = self.stub.GetArtifact(
            pb.GetArtifactRequest(id=artifact_id), timeout=TIMEOUT, metadata=metadata()
        ).artifact
        assert artifact.state == pb.ARTIFACT_STATE_READY, f"{_replay()}: {artifact}"
        assert (artifact.size_bytes, artifact.sha256) == (size, expected), _replay()
        digest, got = hashlib.sha256(), 0
        read = pb.ReadRequest(resource_name=f"artifacts/{artifact_id}")
        for message in self.stub.Read(read, timeout=TIMEOUT, metadata=metadata()):
            digest.update(message.data)
            got += len(message.data)
        assert (got, digest.hexdigest()) == (size, expected), (
            f"{_replay()}: read back {got} bytes hashing to {digest.hexdigest()}, the source "
            f"is {size} bytes hashing to {expected} (cuts: {plan})"
        )

    def _finish(self, name: str, artifact_id: str, size: int, warm: bool, *, wrong: bool) -> None:
        """The finish alone, and the path it took: the kept hash, or reading the object."""
        assert self.stub is not None
        path = "warm" if warm else "cold"
        read_before = self.read_bytes() if self.s3 is None else self.object_gets(artifact_id)
        started = time.monotonic()
        finish = pb.WriteRequest(resource_name=name, write_offset=size, finish_write=True)
        error: grpc.RpcError | None = None
        try:
            self.stub.Write(iter([finish]), timeout=TIMEOUT, metadata=metadata())
        except grpc.RpcError as failed:
            error = failed
        self.finishes.append((path, time.monotonic() - started))
        if self.s3 is None:
            read = self.read_bytes() - read_before
            how = f"the server read {read} bytes of files during the finish of {size}"
            reread = read >= size
            assert reread or read < size // 4, f"{_replay()}: {how}"
        else:
            gets = self.object_gets(artifact_id) - read_before
            how = f"the server GET the object {gets} times during the finish"
            reread = gets > 0
        assert reread == (not warm), (
            f"{_replay()}: expected the {path} path ("
            + ("the running hash was kept" if warm else "the server restarted mid-upload")
            + f"), but {how}"
        )
        if not wrong:
            assert error is None, f"{_replay()}: the finish of {name} failed: {error}"
            return
        assert error is not None, f"{_replay()}: a wrong sha256 was accepted on the {path} path"
        assert error.code() == grpc.StatusCode.DATA_LOSS, f"{_replay()}: {error}"
        assert rich_status(error).reason == "SHA256_MISMATCH", f"{_replay()}: {error}"
        status = self.status(name)
        assert (status.committed_size, status.complete) == (0, False), (
            f"{_replay()}: after a sha256 mismatch the upload must start over: {status}"
        )
        artifact = self.stub.GetArtifact(
            pb.GetArtifactRequest(id=artifact_id), timeout=TIMEOUT, metadata=metadata()
        ).artifact
        assert artifact.state == pb.ARTIFACT_STATE_UPLOADING, f"{_replay()}: {artifact}"


def _plan(
    rng: random.Random, size: int, kinds: list[Cut], last_at_least: int = 1
) -> list[tuple[int, Cut]]:
    """Distinct cut offsets in (0, size), increasing, one per kind; the last at or past
    ``last_at_least``."""
    offsets = sorted(rng.sample(range(1, size), len(kinds)))
    if offsets[-1] < last_at_least:
        below = offsets[-2] + 1 if len(offsets) > 1 else 1
        offsets[-1] = rng.randrange(max(last_at_least, below), size)
    return list(zip(offsets, kinds, strict=True))


def _source(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(os.urandom(MIB))
        out.write(os.urandom(size % MIB))
    return path


def _server(workdir: Path, extra: dict[str, str] | None = None) -> ArtifactServer:
    return ArtifactServer(
        workdir,
        {
            "AGENTIC_OBJECT_STORE_PART_BYTES": str(PART),
            "AGENTIC_UPLOAD_WRITER_LEASE_SECONDS": str(LEASE_SECONDS),
            "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
            **(extra or {}),
        },
    )


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    """A server on a file store and SQLite, a source file, an RNG of this test."""
    server = _server(tmp_path)
    server.start()
    rig = Rig(server, _source(tmp_path / "source.bin", FILE_SIZE), random.Random(_key(request)))
    rig.connect()
    try:
        yield rig
    finally:
        rig.close()
        server.stop()
        _remove_bytes(tmp_path)


def _remove_bytes(workdir: Path) -> None:
    """The source and the store's objects (pytest keeps the last runs' directories)."""
    (workdir / "source.bin").unlink(missing_ok=True)
    shutil.rmtree(workdir / "objects", ignore_errors=True)


def _key(request: pytest.FixtureRequest) -> str:
    return f"{SEED}/{request.node.name}"


def _report(rig: Rig) -> None:
    """What the run saw (pytest shows it with -s or -rP)."""
    restarts = ", ".join(f"{s:.2f}" for s in rig.restarts) or "none"
    finishes = ", ".join(f"{path} {s:.3f}s" for path, s in rig.finishes)
    print(
        f"{_replay()}; restarts (s): {restarts}; busy retries: {rig.busy_retries}; "
        f"cancels that found the server behind: {rig.behind}; finishes: {finishes}"
    )


def test_forty_client_cancels_resume_to_the_exact_bytes(rig: Rig) -> None:
    cancels = (Cut.SETTLED_CANCEL, Cut.RACING_CANCEL)
    for count in (13, 13, 13):
        kinds = [rig.rng.choice(cancels) for _ in range(count)]
        rig.upload(_plan(rig.rng, FILE_SIZE, kinds))
    # The server waits for a cut stream's end before it answers the next call on the
    # upload, so a client resuming at once never sees its own dead stream as busy.
    assert rig.busy_retries == 0, f"{_replay()}: UPLOAD_BUSY {rig.busy_retries} times"
    assert [path for path, _ in rig.finishes] == ["warm"] * 3
    _report(rig)


def test_ten_server_kills_resume_and_a_wrong_sha256_is_caught_cold(rig: Rig) -> None:
    kills = (Cut.SETTLED_KILL, Cut.RACING_KILL)
    # The last kill of each upload is settled well past the first part, so the new server
    # continues a hash it does not have: both finishes take the cold path.
    # A cancel among them: a stream on a restarted server is cut and resumed there too.
    kinds = [rig.rng.choice(kills) for _ in range(6)]
    kinds.insert(rig.rng.randrange(1, 6), Cut.RACING_CANCEL)
    rig.upload(_plan(rig.rng, FILE_SIZE, [*kinds, Cut.SETTLED_KILL], last_at_least=3 * PART))
    wrong = hashlib.sha256(b"not the source").hexdigest()
    kinds = [rig.rng.choice(kills), rig.rng.choice(kills), Cut.SETTLED_KILL]
    rig.upload(_plan(rig.rng, FILE_SIZE, kinds, last_at_least=3 * PART), sha256=wrong)
    assert [path for path, _ in rig.finishes] == ["cold", "cold"]
    _report(rig)


def test_cuts_on_an_s3_store(tmp_path: Path) -> None:
    with S3Server(log_path=tmp_path / "moto.log") as s3:
        bucket = f"resume-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(bucket)
        server = _server(
            tmp_path, {**s3.env(), "AGENTIC_OBJECT_STORE_URL": f"s3://{bucket}/objects"}
        )
        server.start()
        rng = random.Random(f"{SEED}/s3")
        rig = Rig(server, _source(tmp_path / "source.bin", S3_SIZE), rng, s3=s3)
        rig.connect()
        try:
            cancels = (Cut.SETTLED_CANCEL, Cut.RACING_CANCEL)
            rig.upload(_plan(rng, S3_SIZE, [rng.choice(cancels) for _ in range(5)]))
            kinds = [rng.choice(cancels), Cut.RACING_KILL, rng.choice(cancels), Cut.SETTLED_KILL]
            rig.upload(_plan(rng, S3_SIZE, [rng.choice(cancels), *kinds], 2 * PART))
        finally:
            rig.close()
            server.stop()
            _remove_bytes(tmp_path)
    assert [path for path, _ in rig.finishes] == ["warm", "cold"]
    _report(rig)

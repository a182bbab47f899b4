"""``agentic artifacts ...``: upload and download with progress bars and resume, list, get.

Uploads follow google.bytestream (STYLE.md 17): ``CreateUpload``, then ``Write`` streams of
1 MiB chunks from ``write_offset``; after a broken stream the client asks
``QueryWriteStatus`` for the committed size and sends only the rest. To resume after the
CLI itself stopped (Ctrl-C, a kill, a reboot), it keeps the upload's name in a small state
file under ``$XDG_CACHE_HOME/agentic/uploads/`` (``~/.cache`` by default), keyed by the
file's absolute path and the server address, written right after ``CreateUpload`` and
removed once the artifact is READY; ``--resume`` reads it back. The file must be unchanged
(size and modification time), else the upload starts over.

Downloads (``cli._transfer``) resume from the size of the file already on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import mimetypes
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
from agentic.artifacts.v1 import artifacts_pb2 as pb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from rich.progress import Progress

from cli._errors import ExitCode, UsageError, describe
from cli._render import enum_name, fmt_bytes, render_list, render_message
from cli._session import Session
from cli._transfer import (
    CHUNK_BYTES,
    MAX_RETRIES,
    RETRY,
    TRANSIENT,
    Pacer,
    download_to,
    parse_rate,
    transfer_bar,
)

__all__ = ["UploadState", "add_commands", "state_path"]

_FORMATS = {
    ".csv": pb.DATASET_FORMAT_CSV,
    ".parquet": pb.DATASET_FORMAT_PARQUET,
    ".jsonl": pb.DATASET_FORMAT_JSONL,
    ".ndjson": pb.DATASET_FORMAT_JSONL,
}
_KINDS = {"document": pb.ARTIFACT_KIND_DOCUMENT, "dataset": pb.ARTIFACT_KIND_DATASET}
_FORMAT_NAMES = {
    "csv": pb.DATASET_FORMAT_CSV,
    "parquet": pb.DATASET_FORMAT_PARQUET,
    "jsonl": pb.DATASET_FORMAT_JSONL,
}


def _stub(session: Session) -> artifacts_pb2_grpc.ArtifactServiceStub:
    return artifacts_pb2_grpc.ArtifactServiceStub(session.channel)


# --- upload state ---------------------------------------------------------------------


@dataclass(frozen=True)
class UploadState:
    """What ``--resume`` needs to continue an upload the CLI began."""

    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str
    project_id: str
    upload_name: str
    artifact_id: str


def state_path(cache_dir: Path, file: Path, address: str) -> Path:
    """The state file of ``file``'s upload to ``address``."""
    key = hashlib.sha256(f"{file.resolve()}\n{address}".encode()).hexdigest()[:32]
    return cache_dir / "uploads" / f"{key}.json"


def _load_state(path: Path) -> UploadState | None:
    try:
        return UploadState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _save_state(path: Path, state: UploadState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(state)))
    partial.replace(path)  # atomic: a kill never leaves half a state file


# --- upload ---------------------------------------------------------------------------


def _sha256(path: Path, progress: Progress) -> str:
    digest = hashlib.sha256()
    bar = progress.add_task("hashing", total=path.stat().st_size)
    with path.open("rb") as f:
        while piece := f.read(CHUNK_BYTES):
            digest.update(piece)
            progress.advance(bar, len(piece))
    progress.remove_task(bar)
    return digest.hexdigest()


def _requests(
    path: Path, upload_name: str, offset: int, size: int, sent: Callable[[int], None]
) -> Iterator[pb.WriteRequest]:
    """The Write stream from ``offset``: 1 MiB chunks, the last one finishing the upload."""
    with path.open("rb") as f:
        f.seek(offset)
        first = True
        while True:
            data = f.read(CHUNK_BYTES)
            finish = offset + len(data) >= size
            yield pb.WriteRequest(
                resource_name=upload_name if first else "",
                write_offset=offset,
                data=data,
                finish_write=finish,
            )
            first, offset = False, offset + len(data)
            sent(offset)
            if finish:
                return


def _kind_and_format(
    args: argparse.Namespace, path: Path
) -> tuple[pb.ArtifactKind.ValueType, pb.DatasetFormat.ValueType]:
    format_ = (
        _FORMAT_NAMES[args.format]
        if args.format
        else _FORMATS.get(path.suffix.lower(), pb.DATASET_FORMAT_UNSPECIFIED)
    )
    kind = args.kind or ("dataset" if format_ else "document")
    if kind == "dataset" and not format_:
        raise UsageError(f"cannot tell the dataset format of {path.name}: give --format")
    if kind == "document":
        return pb.ARTIFACT_KIND_DOCUMENT, pb.DATASET_FORMAT_UNSPECIFIED
    return pb.ARTIFACT_KIND_DATASET, format_


def _begin(
    session: Session, args: argparse.Namespace, path: Path, progress: Progress
) -> UploadState:
    stat = path.stat()
    kind, format_ = _kind_and_format(args, path)
    sha256 = _sha256(path, progress)
    request = pb.CreateUploadRequest(
        project_id=args.project,
        name=args.name or path.name,
        kind=kind,
        format=format_,
        content_type=args.content_type or mimetypes.guess_type(path.name)[0] or "",
        size_bytes=stat.st_size,
        sha256=sha256,
        work_products=args.work_product,
    )
    created = session.call(_stub(session).CreateUpload, request)
    return UploadState(
        path=str(path.resolve()),
        size_bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        sha256=sha256,
        project_id=args.project,
        upload_name=created.upload_name,
        artifact_id=created.artifact.id,
    )


def _committed(session: Session, upload_name: str) -> tuple[int, bool]:
    status = session.call(
        _stub(session).QueryWriteStatus, pb.QueryWriteStatusRequest(resource_name=upload_name)
    )
    return status.committed_size, status.complete


def _send(
    session: Session,
    path: Path,
    state: UploadState,
    offset: int,
    progress: Progress,
    rate: int | None,
) -> None:
    """Write from ``offset`` to the end, resuming from the committed size after a break."""
    bar = progress.add_task("uploading", total=state.size_bytes, completed=offset)
    delays = RETRY.delays()
    failures = 0
    while True:
        pace = Pacer(rate, offset)

        def sent(position: int, pace: Pacer = pace) -> None:
            progress.update(bar, completed=position)
            pace.reached(position)

        try:
            requests = _requests(path, state.upload_name, offset, state.size_bytes, sent)
            _stub(session).Write(requests, metadata=session.metadata)
            return
        except grpc.RpcError as error:
            failure = describe(error)
            resumable = error.code() in TRANSIENT or failure.reason == "WRITE_OFFSET_MISMATCH"
            if not resumable or failures >= MAX_RETRIES:
                raise
            failures += 1
            wait = next(delays)
            progress.console.print(
                f"upload broke ({failure.code} {failure.reason}); resuming in {wait:.1f} s",
                markup=False,
            )
            time.sleep(wait)
        try:
            committed, complete = _committed(session, state.upload_name)
        except grpc.RpcError as error:
            if error.code() not in TRANSIENT or failures >= MAX_RETRIES:
                raise
            continue  # the next Write asks again after it fails
        if complete:
            return
        if committed > offset:
            # It moved since the last break: count failures in a row, not per upload.
            failures, delays = 0, RETRY.delays()
        offset = committed
        progress.update(bar, completed=offset)


def _upload(session: Session, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    saved = state_path(session.cache_dir, path, session.config.address)
    state = _load_state(saved) if args.resume else None
    stat = path.stat()
    if state is not None and (
        (state.size_bytes, state.mtime_ns) != (stat.st_size, stat.st_mtime_ns)
        or state.project_id != args.project
    ):
        session.output.note(f"{path} or the project changed since its upload began; starting over")
        state = None
    if args.resume and state is None:
        session.output.note(f"no unfinished upload of {path} to resume; starting a new one")
    elif not args.resume and saved.exists():
        session.output.note(
            f"an unfinished upload of {path} exists (--resume continues it); starting a new one"
        )
    resumed_from = 0
    with transfer_bar(session) as progress:
        if state is None:
            state = _begin(session, args, path, progress)
            _save_state(saved, state)
            complete = False
        else:
            resumed_from, complete = _committed(session, state.upload_name)
            progress.console.print(
                f"resuming {state.upload_name} at {resumed_from} bytes "
                f"({resumed_from / max(1, state.size_bytes):.0%})",
                markup=False,
            )
        try:
            if not complete:
                _send(session, path, state, resumed_from, progress, args.limit_rate)
        except KeyboardInterrupt:
            progress.console.print(
                f"interrupted; `agentic artifacts upload {args.file} --project {args.project} "
                "--resume` continues the upload",
                markup=False,
            )
            raise
    artifact = session.call(
        _stub(session).GetArtifact, pb.GetArtifactRequest(id=state.artifact_id)
    ).artifact
    with contextlib.suppress(FileNotFoundError):
        saved.unlink()
    if session.output.json:
        session.output.emit("artifact", artifact, resumed_from=resumed_from)
    else:
        render_message(session.output.out, f"artifact {artifact.id}", artifact)
        if resumed_from:
            session.output.note(f"resumed from byte {resumed_from}")
    return ExitCode.OK


def _download(session: Session, args: argparse.Namespace) -> int:
    target = args.output_file
    if target is None:
        artifact = session.call(_stub(session).GetArtifact, pb.GetArtifactRequest(id=args.id))
        # A display name, never a path: only its last part, in the working directory.
        target = Path(artifact.artifact.name).name or args.id
    return download_to(session, args.id, target, overwrite=args.overwrite, rate=args.limit_rate)


# --- the rest -------------------------------------------------------------------------

_COLUMNS = [
    ("id", lambda a: a.id),
    ("name", lambda a: a.name),
    ("kind", lambda a: enum_name(a, "kind")),
    ("state", lambda a: enum_name(a, "state")),
    ("size", lambda a: fmt_bytes(a.size_bytes)),
    ("work products", lambda a: ", ".join(a.work_products)),
]


def _list(session: Session, args: argparse.Namespace) -> int:
    request = pb.ListArtifactsRequest(
        project_id=args.project,
        page_size=args.page_size,
        page_token=args.page_token,
        kind=_KINDS.get(args.kind or "", pb.ARTIFACT_KIND_UNSPECIFIED),
        work_product=args.work_product or "",
    )
    response = session.call(_stub(session).ListArtifacts, request)
    if session.output.json:
        for artifact in response.artifacts:
            session.output.emit("artifact", artifact)
        if response.next_page_token:
            session.output.emit("page", next_page_token=response.next_page_token)
        return ExitCode.OK
    render_list(session.output.out, "artifacts", response.artifacts, _COLUMNS)
    if response.next_page_token:
        session.output.note(f"more: --page-token {response.next_page_token}")
    return ExitCode.OK


def _get(session: Session, args: argparse.Namespace) -> int:
    artifact = session.call(_stub(session).GetArtifact, pb.GetArtifactRequest(id=args.id)).artifact
    if session.output.json:
        session.output.emit("artifact", artifact)
    else:
        render_message(session.output.out, f"artifact {artifact.id}", artifact)
    return ExitCode.OK


def _delete(session: Session, args: argparse.Namespace) -> int:
    session.call(
        _stub(session).DeleteArtifact, pb.DeleteArtifactRequest(id=args.id, etag=args.etag)
    )
    session.output.emit("deleted", id=args.id)
    if not session.output.json:
        session.output.note(f"deleted artifact {args.id}")
    return ExitCode.OK


def add_commands(commands: Any) -> None:
    """Add ``artifacts ...`` to the top-level subcommands."""
    artifacts = commands.add_parser("artifacts", help="upload, download and list artifacts")
    sub = artifacts.add_subparsers(dest="artifacts_command", required=True, metavar="COMMAND")

    upload = sub.add_parser("upload", help="upload a file (resumable)")
    upload.add_argument("file", metavar="FILE")
    upload.add_argument("--project", required=True, metavar="ID")
    upload.add_argument("--name", help="display name (default: the file's name)")
    upload.add_argument(
        "--kind",
        choices=["document", "dataset"],
        help="default: dataset for .csv/.parquet/.jsonl, else document",
    )
    upload.add_argument("--format", choices=sorted(_FORMAT_NAMES), help="a dataset's format")
    upload.add_argument("--content-type", metavar="TYPE", help="default: from the extension")
    upload.add_argument(
        "--work-product",
        action="append",
        default=[],
        metavar="NN-NN",
        help="an ASPICE work product the document provides (repeatable)",
    )
    upload.add_argument(
        "--resume",
        action="store_true",
        help="continue this file's unfinished upload from the committed size",
    )
    upload.add_argument(
        "--limit-rate", type=parse_rate, metavar="RATE", help="at most RATE bytes/s (20M, 500K)"
    )
    upload.set_defaults(run=_upload)

    download = sub.add_parser("download", help="download an artifact (resumes a partial file)")
    download.add_argument("id")
    download.add_argument(
        "-o",
        "--output-file",
        metavar="FILE",
        help="default: the artifact's name in the working directory",
    )
    download.add_argument("--overwrite", action="store_true", help="start from byte 0")
    download.add_argument(
        "--limit-rate", type=parse_rate, metavar="RATE", help="at most RATE bytes/s (20M, 500K)"
    )
    download.set_defaults(run=_download)

    list_cmd = sub.add_parser("list", help="a project's artifacts")
    list_cmd.add_argument("--project", required=True, metavar="ID")
    list_cmd.add_argument("--kind", choices=["document", "dataset"])
    list_cmd.add_argument("--work-product", metavar="NN-NN")
    list_cmd.add_argument("--page-size", type=int, default=0, metavar="N")
    list_cmd.add_argument("--page-token", default="", metavar="TOKEN")
    list_cmd.set_defaults(run=_list)

    get = sub.add_parser("get", help="one artifact's metadata")
    get.add_argument("id")
    get.set_defaults(run=_get)

    delete = sub.add_parser("delete", help="delete an artifact")
    delete.add_argument("id")
    delete.add_argument("--etag", default="", help="only if still this version")
    delete.set_defaults(run=_delete)

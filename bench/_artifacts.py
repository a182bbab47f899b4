"""The artifact section of ``make bench``: artifact bytes beside their raw building blocks.

Issue 11's benchmark. One file of ``size_mib`` random bytes goes up and comes back along
each route, in interleaved passes (``bench._artifacts_passes``):

1. the API server (``python -m server``, as in production: its malloc is set by
   ``core.serving.tune_malloc``) with the file store: CreateUpload + Write, Read;
2. the bare ByteStream servicer (``bench._bare_bytestream``): the same Write and Read
   calls, the same client code, no logic;
3. the plain file: ``shutil.copyfile``, then reading it (the physical floor);
4. the API server with the S3 store against a private moto S3 server (``devtools.s3``);
5. raw boto3 ``upload_fileobj`` / ``download_fileobj`` to the same moto server.

Then the building blocks run once each (``bench._artifacts_blocks``). MB/s (best pass),
peak RSS and page faults of each server and CPU per MiB by process go into the report's
artifact section (``bench._artifacts_report``); the targets and the explanations are in
``bench._artifacts_targets``. Every process started here is stopped and every file
removed when the section ends, however it ends.

``python -m bench._artifacts [--quick]`` runs the section alone (on a fresh PostgreSQL
database) and prints it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2, projects_pb2_grpc

from bench._artifacts_blocks import file_blocks, s3_blocks
from bench._artifacts_client import make_source
from bench._artifacts_passes import baselines, rows, run_passes, warm_up
from bench._artifacts_report import ArtifactSection, render_artifacts_console
from bench._artifacts_routes import ApiRoute, BareRoute, Boto3Route, FileRoute, Route
from bench._artifacts_s3 import BUCKET, S3Target, s3_target
from bench._artifacts_targets import checks, where
from tests._identity import authorized_channel, dev_keys
from tests._processes import Service, start_service
from tests._support import postgres_database
from tests.server.artifacts._bytestream import sha256_file

__all__ = ["QUICK", "ArtifactPlan", "measure_artifacts"]

_MIB = 1024 * 1024
_WARM_BYTES = 4 * _MIB
_START_TIMEOUT_SECONDS = 60.0
_CALL_TIMEOUT_SECONDS = 10.0
_CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ArtifactPlan:
    """How much the artifact section moves; each transfer and the passes are bounded."""

    size_mib: int = 256
    passes: int = 3
    transfer_timeout_seconds: float = 60.0
    """Deadline of each Write or Read stream."""
    budget_seconds: float = 100.0
    """No pass starts after this much of the section (the first always runs)."""

    @property
    def size_bytes(self) -> int:
        """The file's size."""
        return self.size_mib * _MIB

    def describe(self) -> str:
        """One line for the report."""
        return (
            f"a {self.size_mib} MiB file of random bytes up and back along every route, "
            f"best of {self.passes} interleaved passes (no pass starts after "
            f"{self.budget_seconds:.0f} s), 1 MiB chunks, each stream bounded by "
            f"{self.transfer_timeout_seconds:.0f} s"
        )


QUICK = ArtifactPlan(size_mib=32, passes=2, budget_seconds=40.0)
"""``--quick``: a smaller file, two passes."""


def _api_env(database_url: str) -> dict[str, str]:
    return {
        "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
        "DATABASE_URL": database_url,
        "AGENTIC_CACHE_ADDRESS": "",
        "AGENTIC_EVENTS_ENABLED": "false",
        "AGENTIC_TASKS_ENABLED": "false",
        "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
    }


class _Processes:
    """Starts services and channels on an ExitStack, which stops and closes them."""

    def __init__(self, stack: ExitStack, workdir: Path) -> None:
        self._stack = stack
        self._workdir = workdir

    def start(self, module: str, env: dict[str, str]) -> Service:
        service = start_service(module, env, self._workdir, timeout=_START_TIMEOUT_SECONDS)
        self._stack.callback(service.stop)
        return service

    def channel(self, service: Service, *, token: bool) -> grpc.Channel:
        if token:
            channel = authorized_channel(service.address, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.insecure_channel(service.address, options=_CHANNEL_OPTIONS)
        self._stack.callback(channel.close)
        return channel


def _project(channel: grpc.Channel) -> str:
    request = projects_pb2.CreateProjectRequest(
        project=projects_pb2.Project(
            name=f"bench-artifacts-{uuid.uuid4().hex[:8]}", owner_id="bench"
        )
    )
    reply = projects_pb2_grpc.ProjectServiceStub(channel).CreateProject(
        request, timeout=_CALL_TIMEOUT_SECONDS
    )
    return str(reply.project.id)


def _optional_s3(stack: ExitStack, workdir: Path) -> tuple[S3Target | None, str]:
    """The S3 server (stopped by ``stack``), or None and why there is none: the other
    rows run either way."""
    try:
        return stack.enter_context(s3_target(workdir / "moto-s3.log")), ""
    except ImportError as exc:
        return None, f"the S3 backend's development server is not available ({exc})"
    except Exception as exc:
        return None, f"moto's S3 server did not start: {type(exc).__name__}: {exc}"


def _routes(
    procs: _Processes,
    workdir: Path,
    database_url: str,
    digests: dict[Path, str],
    s3: S3Target | None,
) -> list[Route]:
    api_file = procs.start("server", _api_env(database_url))
    bare_dir = workdir / "bare"
    bare = procs.start("bench._bare_bytestream", {"BENCH_DIR": str(bare_dir)})
    api_channel = procs.channel(api_file, token=True)
    project_id = _project(api_channel)
    routes: list[Route] = [
        ApiRoute(
            key="api_file",
            name="API server, file store",
            stub=artifacts_pb2_grpc.ArtifactServiceStub(api_channel),
            project_id=project_id,
            digests=digests,
            server_pid=api_file.process.pid,
        ),
        BareRoute(
            key="bare",
            name="bare servicer",
            stub=artifacts_pb2_grpc.ArtifactServiceStub(procs.channel(bare, token=False)),
            directory=bare_dir,
            server_pid=bare.process.pid,
        ),
        FileRoute(key="plain", name="plain file", target=workdir / "copy.bin"),
    ]
    if s3 is None:
        return routes
    env = {**_api_env(database_url), **s3.env, "AGENTIC_OBJECT_STORE_URL": s3.store_url}
    api_s3 = procs.start("server", env)
    s3_channel = procs.channel(api_s3, token=True)
    routes += [
        ApiRoute(
            key="api_s3",
            name="API server, S3 store",
            stub=artifacts_pb2_grpc.ArtifactServiceStub(s3_channel),
            project_id=project_id,
            digests=digests,
            server_pid=api_s3.process.pid,
            s3_pid=s3.pid,
        ),
        Boto3Route(key="boto3", name="raw boto3", client=s3.client, bucket=BUCKET, s3_pid=s3.pid),
    ]
    return routes


_PATHS = {
    "api_file": "client -> API server (auth, validation, hash, fsync every 8 MiB, database "
    "checkpoints) -> file",
    "bare": "client -> grpc.aio servicer -> file",
    "plain": "shutil.copyfile / read in 1 MiB pieces",
    "api_s3": "client -> API server -> moto S3 server (multipart, 8 MiB parts)",
    "boto3": "boto3 managed transfer -> moto S3 server",
}


def measure_artifacts(
    database_url: str, workdir: Path, plan: ArtifactPlan, progress: Progress
) -> ArtifactSection:
    """Start the servers, run the passes, stop everything; the section's figures."""
    clock = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        source, warm = workdir / "source.bin", workdir / "warm.bin"
        for path in (source, warm):
            stack.callback(path.unlink, missing_ok=True)
        progress(f"artifacts: writing a {plan.size_mib} MiB file")
        make_source(source, plan.size_bytes)
        make_source(warm, _WARM_BYTES)
        digests = {source: sha256_file(source), warm: sha256_file(warm)}
        progress("artifacts: moto S3 server, API servers (file and S3 store), bare servicer")
        s3, s3_missing = _optional_s3(stack, workdir)
        routes = _routes(_Processes(stack, workdir), workdir, database_url, digests, s3)
        warm_up(routes, warm, plan.transfer_timeout_seconds)
        idle = baselines(routes)
        tallies, done = run_passes(
            routes,
            source,
            passes=plan.passes,
            timeout=plan.transfer_timeout_seconds,
            deadline=clock + plan.budget_seconds,
            progress=progress,
        )
        progress("artifacts: building blocks")
        blocks = file_blocks(workdir, plan.size_bytes)
        if s3 is not None:
            blocks += s3_blocks(s3.client, BUCKET, s3.pid, source, plan.size_bytes)
        progress("artifacts: stopping")
    measured = rows(routes, tallies, idle, _PATHS)
    sanity = [
        f"{done} of {plan.passes} passes ran"
        + ("" if done == plan.passes else f" (the {plan.budget_seconds:.0f} s budget was spent)"),
        f"every measured transfer moved exactly the file's {plan.size_bytes} bytes"
        if not any(r.errors for r in measured)
        else "some transfers failed (errors column); their passes have no figure",
    ]
    for route in routes:
        if isinstance(route, ApiRoute):
            sanity += route.problems or [
                f"{route.name}: every upload was READY with the declared size and sha256 "
                "(the server checks the sha256 at finish_write)"
            ]
    cpus = len(os.sched_getaffinity(0))
    return ArtifactSection(
        seconds=time.monotonic() - clock,
        plan=plan.describe(),
        setup=(
            "API servers (`python -m server`, production defaults, authentication on, "
            "no cache sidecar, no broker) on the benchmark's PostgreSQL database, one "
            "with the file store, one with the S3 store on a private moto S3 server; "
            "the bare servicer; the benchmark process as the one client"
        ),
        rows=measured,
        checks=checks(measured),
        where=where(measured, blocks, cpus),
        sanity=sanity,
        blocks=blocks,
        s3_missing=s3_missing,
    )


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the section alone on a fresh database and print it."""
    parser = argparse.ArgumentParser(prog="python -m bench._artifacts", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 32 MiB file, two passes")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else ArtifactPlan()
    with (
        tempfile.TemporaryDirectory(prefix="agentic-bench-artifacts-") as tmp,
        postgres_database(Path(tmp) / "postgres") as database_url,
    ):
        section = measure_artifacts(database_url, Path(tmp) / "artifacts", plan, _progress)
    shutil.rmtree(dev_keys().directory, ignore_errors=True)  # the servers' trusted keys
    print("\n".join(render_artifacts_console(section)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The artifact section of a run: its figures, and how the report renders them."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench._tables import section_tail
from bench._tables import table as _table
from bench._tables import verdict as _verdict

__all__ = [
    "CPU_ROLES",
    "ArtifactBlock",
    "ArtifactCheck",
    "ArtifactRow",
    "ArtifactSection",
    "render_artifacts_console",
    "render_artifacts_markdown",
]

CPU_ROLES = ("client", "server", "S3 server")
"""The processes whose CPU is metered per MiB: the benchmark process, the gRPC server of
the row (API server or bare servicer), moto's S3 server."""


@dataclass(frozen=True)
class ArtifactRow:
    """One measured path in one direction."""

    key: str
    label: str
    path: str
    passes_mb_s: list[float]
    """MB/s (10^6 bytes per second) of each pass that completed."""
    server_peak_mib: float | None = None
    """Highest RSS of the row's gRPC server over its transfers (VmHWM)."""
    server_growth_mib: float | None = None
    """That peak over the server's idle RSS before the first measured transfer."""
    s3_peak_mib: float | None = None
    """Highest RSS of the S3 server over the row's transfers."""
    cpu_ms_per_mib: dict[str, float] = field(default_factory=dict)
    """CPU ms per MiB moved by CPU_ROLES, in the row's best pass."""
    server_faults_per_mib: float | None = None
    """Minor page faults of the gRPC server per MiB moved, in the row's best pass."""
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def best_mb_s(self) -> float | None:
        """The best pass (noise only ever slows a transfer down)."""
        return max(self.passes_mb_s) if self.passes_mb_s else None


@dataclass(frozen=True)
class ArtifactBlock:
    """One building block, run once in the benchmark process (``bench._artifacts_blocks``)."""

    key: str
    label: str
    seconds: float
    bytes: int
    client_ms_per_mib: float | None
    """CPU of the benchmark process per MiB."""
    s3_ms_per_mib: float | None = None
    """CPU of the S3 server per MiB, for the S3 blocks."""

    @property
    def mb_s(self) -> float:
        """Decimal MB per second."""
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ArtifactCheck:
    """A target of the artifact section, or a ratio shown for scale (``passed`` None)."""

    name: str
    measured: str
    target: str
    passed: bool | None


@dataclass(frozen=True)
class ArtifactSection:
    """Everything the artifact section measured."""

    seconds: float
    plan: str
    setup: str
    rows: list[ArtifactRow]
    checks: list[ArtifactCheck]
    where: list[str]
    """Where the time goes, from this run's figures."""
    sanity: list[str]
    blocks: list[ArtifactBlock] = field(default_factory=list)
    s3_missing: str = ""
    """Empty, or why there are no S3 rows."""


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _figures(section: ArtifactSection, *, markdown: bool) -> list[str]:
    header = [
        "path",
        "MB/s (best)",
        "MB/s (each pass)",
        "server peak RSS MiB",
        "server RSS growth MiB",
        "S3 server peak RSS MiB",
        "errors",
    ]
    rows = [
        [
            r.label,
            _num(r.best_mb_s),
            " ".join(f"{v:.0f}" for v in r.passes_mb_s) or "-",
            _num(r.server_peak_mib),
            _num(r.server_growth_mib),
            _num(r.s3_peak_mib),
            ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "0",
        ]
        for r in section.rows
    ]
    return _table(header, rows, markdown=markdown)


def _cpu(section: ArtifactSection, *, markdown: bool) -> list[str]:
    header = [
        "path",
        *(f"{role} ms/MiB" for role in CPU_ROLES),
        "total ms/MiB",
        "server page faults/MiB",
    ]
    rows = []
    for r in section.rows:
        if not r.cpu_ms_per_mib:
            continue
        cells = [f"{r.cpu_ms_per_mib[x]:.2f}" if x in r.cpu_ms_per_mib else "-" for x in CPU_ROLES]
        total = f"{sum(r.cpu_ms_per_mib.values()):.2f}"
        rows.append([r.label, *cells, total, _num(r.server_faults_per_mib)])
    return _table(header, rows, markdown=markdown) if rows else []


def _blocks(section: ArtifactSection, *, markdown: bool) -> list[str]:
    header = ["block", "seconds", "MB/s", "benchmark process ms/MiB", "S3 server ms/MiB"]
    rows = [
        [
            b.label,
            f"{b.seconds:.2f}",
            f"{b.mb_s:.0f}",
            _num(b.client_ms_per_mib, 2),
            _num(b.s3_ms_per_mib, 2),
        ]
        for b in section.blocks
    ]
    return _table(header, rows, markdown=markdown) if rows else []


def _checks(section: ArtifactSection, *, markdown: bool) -> list[str]:
    header = ["measure", "value", "target", "result"]
    rows = [[c.name, c.measured, c.target or "-", _verdict(c.passed)] for c in section.checks]
    return _table(header, rows, markdown=markdown)


def render_artifacts_console(section: ArtifactSection) -> list[str]:
    """The artifact section's lines of the console table."""
    lines = [
        "",
        f"artifacts ({section.seconds:.0f} s)",
        "setup: " + section.setup,
        "plan: " + section.plan,
    ]
    if section.s3_missing:
        lines.append("NO S3 ROWS: " + section.s3_missing)
    lines += ["", *_figures(section, markdown=False)]
    cpu = _cpu(section, markdown=False)
    if cpu:
        lines += ["", "CPU per MiB moved (ms):", *cpu]
    blocks = _blocks(section, markdown=False)
    if blocks:
        lines += ["", "building blocks (one run each, in the benchmark process):", *blocks]
    lines += [
        "",
        *_checks(section, markdown=False),
        "",
        "artifacts, where the time goes:",
        *section.where,
        "",
        *("sanity: " + s for s in section.sanity),
    ]
    return lines


_HOW = """\
One file of random (incompressible) bytes is moved along each path; every process runs
on this machine and talks over 127.0.0.1 only. The benchmark process is the only
client: the synchronous grpcio API, one channel per server, one stream at a time.

- **API server, file store**: `python -m server` on the benchmark's PostgreSQL database
  with `AGENTIC_OBJECT_STORE_URL=file://<temporary directory>` (production defaults:
  fsync every `AGENTIC_OBJECT_STORE_PART_BYTES` = 8 MiB, 8 object IO threads, the
  interceptor with authentication and protovalidate on every message, glibc's malloc
  set at start by `core.serving.tune_malloc`: two arenas, 4 MiB mmap threshold, 16 MiB
  trim threshold). Upload is
  `CreateUpload` (size and sha256 declared) plus one `Write` stream of the whole file
  in 1 MiB WriteRequests with `finish_write` on the last, until its WriteResponse: the
  bytes are hashed, written and fsynced, the committed size recorded in the database
  at every 8 MiB checkpoint, and the artifact made READY. Download is one `Read` stream
  of the whole artifact (1 MiB ReadResponses), the bytes counted and dropped.
- **bare servicer** (`bench/_bare_bytestream.py`), the baseline of the targets: a
  `grpc.aio.server()` with one generic handler for the same two methods under the same
  names and message classes, so the same stub and client code drive it. Write appends
  each message's `data` to a file; Read sends the file back in 1 MiB messages. File IO on
  its event loop, no fsync, no hash, no offsets checked, no authentication, validation,
  database or interceptor. Its own process, like the API server.
- **plain file**: `shutil.copyfile` of the same file in the benchmark process (in the
  kernel on Linux: no bytes through Python), and reading the file in 1 MiB pieces into
  Python bytes: the physical floor with no network and no process hop.
- **API server, S3 store**: the same, with `AGENTIC_OBJECT_STORE_URL=s3://bench/artifacts`
  against moto's S3 server (`python -m moto.server`, `devtools/s3.py`) on a loopback
  port: the upload is an S3 multipart upload of 8 MiB parts, uploaded one after the other
  from the Write stream; the download one GET streamed in 1 MiB pieces.
- **raw boto3**: `upload_fileobj` / `download_fileobj` of the same file to and from the
  same moto server from the benchmark process, with boto3's default transfer settings
  (8 MiB parts and ranges, up to 10 threads at once), downloads into a counting sink.
- **MB/s**: bytes moved over wall time of the transfer (10^6 bytes per second), the best
  of the passes (each pass runs every path once, upload then download, in turn; noise
  only slows a transfer down). Between paths the benchmark removes what the last one
  wrote and calls `sync()`, so no path pays for another's write-back. Right before each
  transfer it writes and deletes a scratch file of the same size (see Caveats).
- **RSS**: before every measured transfer `5` is written to `/proc/<pid>/clear_refs`,
  which resets the process's `VmHWM` to its current RSS; `VmHWM` after the transfer is
  that transfer's peak (also sampled from `VmRSS` every 10 ms). Peak: the highest over
  the row's passes; growth: that peak over the server's RSS when idle before its first
  measured transfer (after one small warm-up transfer each way).
- **CPU per MiB**: user + system CPU of each process (all threads) from
  `/proc/<pid>/stat` over the best pass's transfer, divided by the MiB moved; **page
  faults** the same for the server's minor faults (pages touched fresh).
- **Building blocks**, once each after the passes, in the benchmark process: `hashlib`'s
  sha256 over 1 MiB updates; the file store's writer (`core.objects`, 1 MiB writes, fsync
  every 8 MiB, finish); both per chunk one after the other, as the API server's IO thread
  runs them; and the S3 store's multipart upload made by hand with boto3 against the same
  moto server (sequential 8 MiB UploadPart of `bytes`, then CompleteMultipartUpload,
  timed apart), once as the store makes it and once with `ChecksumAlgorithm=CRC32`
  declared, as `upload_fileobj` does.
"""

_CAVEATS = """\
- Two cores run everything: the client, the server of the row, moto, PostgreSQL. A
  stream is a pipeline of client and server, so MB/s follows the CPU both spend per
  MiB; the CPU table says where it goes.
- The file store's files are in the page cache: write-back and fsync hit a virtual
  disk whose speed varies with the host's other tenants.
- This machine is a VM whose balloon driver hands free memory back to the host a few
  seconds after it is freed (free page reporting); the first touch of such a page costs a
  fault in the host, which made the same 256 MiB file write take 7x the CPU at random
  (1.8 against 0.25 ms/MiB). The scratch file written and deleted before each transfer
  leaves freshly backed free pages for it, so every row pays the same; the best pass
  still varies by tens of percent between runs.
- moto keeps objects in memory and is a Python server: its own CPU per MiB bounds the
  S3 rows, raw and API alike, far below what a real S3 or MinIO would take.
"""


def render_artifacts_markdown(section: ArtifactSection) -> list[str]:
    """The artifact section of docs/benchmarks.md."""
    parts = [
        "## Artifacts",
        "",
        f"- Section time: {section.seconds:.0f} s",
        f"- Setup: {section.setup}",
        f"- Plan: {section.plan}",
    ]
    if section.s3_missing:
        parts.append(f"- **No S3 rows:** {section.s3_missing}")
    parts += ["", "### Figures", "", *_figures(section, markdown=True), ""]
    cpu = _cpu(section, markdown=True)
    if cpu:
        parts += [
            "### CPU per MiB moved",
            "",
            "CPU ms (user + system, every thread) per MiB, over the best pass's transfer.",
            "",
            *cpu,
            "",
        ]
    blocks = _blocks(section, markdown=True)
    if blocks:
        parts += [
            "### Building blocks",
            "",
            "Each run once, after the passes, in the benchmark process: the work the API"
            " server does per chunk besides the bare servicer's, and the S3 calls of its S3"
            " store made by hand against the same moto server.",
            "",
            *blocks,
            "",
        ]
    parts += section_tail(
        _checks(section, markdown=True), section.where, section.sanity, _HOW, _CAVEATS
    )
    return parts

"""The artifact section's targets (issue 11) and where its time goes, from the rows alone.

Rows are keyed ``<route>:<direction>`` with the routes ``api_file`` (API server, file
store), ``bare`` (bare servicer), ``plain`` (file copy / read), ``api_s3`` (API server,
S3 store) and ``boto3`` (raw boto3 to the same S3 server).
"""

from __future__ import annotations

from bench._artifacts_report import CPU_ROLES, ArtifactBlock, ArtifactCheck, ArtifactRow

__all__ = [
    "OVER_BARE_MIN",
    "OVER_BOTO3_MIN",
    "RSS_GROWTH_MAX_MIB",
    "checks",
    "where",
]

OVER_BARE_MIN = 0.7
"""API server over the bare servicer, file store, both ways."""
OVER_BOTO3_MIN = 0.7
"""API server with the S3 store over raw boto3 to the same server, both ways."""
RSS_GROWTH_MAX_MIB = 64.0
"""The API server's resident memory may grow by less than this while transferring."""

_MB_PER_MIB = 1024 * 1024 / 1e6
_DIRECTIONS = ("upload", "download")


def _by_key(rows: list[ArtifactRow]) -> dict[str, ArtifactRow]:
    return {r.key: r for r in rows}


def _ratio(
    rows: dict[str, ArtifactRow], top: str, bottom: str, direction: str
) -> tuple[float, ArtifactRow, ArtifactRow] | None:
    a, b = rows.get(f"{top}:{direction}"), rows.get(f"{bottom}:{direction}")
    if a is None or b is None or not a.best_mb_s or not b.best_mb_s:
        return None
    return a.best_mb_s / b.best_mb_s, a, b


def _ratio_check(
    rows: dict[str, ArtifactRow], top: str, bottom: str, name: str, minimum: float | None
) -> list[ArtifactCheck]:
    out = []
    for direction in _DIRECTIONS:
        found = _ratio(rows, top, bottom, direction)
        if found is None:
            if f"{top}:{direction}" in rows:
                out.append(ArtifactCheck(f"{direction}: {name}", "no figure", "-", False))
            continue
        value = found[0]
        target = "" if minimum is None else f">= {minimum:.2f}"
        passed = None if minimum is None else value >= minimum
        out.append(ArtifactCheck(f"{direction}: {name}", f"{value:.2f}", target, passed))
    return out


def _rss_check(rows: dict[str, ArtifactRow], route: str, name: str) -> list[ArtifactCheck]:
    growth = {
        d: rows[f"{route}:{d}"].server_growth_mib for d in _DIRECTIONS if f"{route}:{d}" in rows
    }
    if not growth:
        return []
    known = [g for g in growth.values() if g is not None]
    measured = ", ".join(f"{d} {'-' if g is None else f'{g:.0f}'} MiB" for d, g in growth.items())
    passed = bool(known) and len(known) == len(growth) and max(known) < RSS_GROWTH_MAX_MIB
    return [ArtifactCheck(name, measured, f"< {RSS_GROWTH_MAX_MIB:.0f} MiB", passed)]


def _scale(found: list[ArtifactCheck]) -> list[ArtifactCheck]:
    """The same checks shown for scale only (no verdict)."""
    return [ArtifactCheck(c.name, c.measured, c.target, None) for c in found]


def checks(rows: list[ArtifactRow]) -> list[ArtifactCheck]:
    """The targets, then ratios shown for scale."""
    by = _by_key(rows)
    return [
        *_ratio_check(
            by, "api_file", "bare", "API server / bare servicer (file store)", OVER_BARE_MIN
        ),
        *_ratio_check(by, "api_s3", "boto3", "API server (S3 store) / raw boto3", OVER_BOTO3_MIN),
        *_rss_check(by, "api_file", "API server RSS growth, file store"),
        *_rss_check(by, "api_s3", "API server RSS growth, S3 store"),
        *_ratio_check(by, "bare", "plain", "bare servicer / plain file", None),
        *_ratio_check(by, "api_file", "plain", "API server / plain file", None),
    ]


def _cap(ms_per_mib: float, cores: float = 1.0) -> float:
    """MB/s a process (or a set of them sharing ``cores``) reaches at this CPU per MiB."""
    return cores * _MB_PER_MIB * 1000 / ms_per_mib if ms_per_mib > 0 else float("inf")


def _cpu_text(row: ArtifactRow) -> str:
    return ", ".join(
        f"{role} {row.cpu_ms_per_mib[role]:.2f}" for role in CPU_ROLES if role in row.cpu_ms_per_mib
    )


def _pair_line(
    by: dict[str, ArtifactRow], top: str, bottom: str, direction: str, what: str, cpus: int
) -> str | None:
    found = _ratio(by, top, bottom, direction)
    if found is None:
        return None
    value, a, b = found
    if not a.cpu_ms_per_mib or not b.cpu_ms_per_mib:
        return None
    busiest = max(a.cpu_ms_per_mib, key=lambda role: a.cpu_ms_per_mib[role])
    total = sum(a.cpu_ms_per_mib.values())
    return (
        f"- {what}, {direction}: {a.best_mb_s:.0f} MB/s against {b.best_mb_s:.0f} "
        f"({value:.2f}x). CPU ms per MiB: {a.label.split(': ', 1)[1]} {_cpu_text(a)}; "
        f"{b.label.split(': ', 1)[1]} {_cpu_text(b)}. The busiest process of the first "
        f"({busiest}, {a.cpu_ms_per_mib[busiest]:.2f} ms/MiB) alone caps its stream at "
        f"{_cap(a.cpu_ms_per_mib[busiest]):.0f} MB/s; all of them together "
        f"({total:.2f} ms/MiB) on {cpus} CPUs at {_cap(total, cpus):.0f} MB/s."
    )


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _upload_line(
    by: dict[str, ArtifactRow], blocks: dict[str, ArtifactBlock], cpus: int
) -> str | None:
    found = _ratio(by, "api_file", "bare", "upload")
    step, sha, write = blocks.get("hash_and_write"), blocks.get("sha256"), blocks.get("store_write")
    if found is None or step is None or sha is None or write is None:
        return None
    _, api, bare = found
    assert api.best_mb_s is not None
    assert bare.best_mb_s is not None
    # The Write stream handles one chunk at a time: while the IO thread hashes and writes
    # it, the loop reads no further message. Serially, the times per MB add up.
    serial = 1 / (1 / bare.best_mb_s + 1 / step.mb_s)
    needed = bare.best_mb_s * (1 / OVER_BARE_MIN - 1) ** -1
    return (
        "- Why the upload is slower: a Write stream handles one chunk at a time, and the "
        "chunk's IO step (in an IO thread, while the event loop waits) is the sha256 and "
        "the file store's write with an fsync every 8 MiB; every 8 MiB the committed size is "
        "also recorded in the database. That step alone runs at "
        f"{step.mb_s:.0f} MB/s here (building blocks: sha256 {sha.mb_s:.0f} MB/s, "
        f"{_num(sha.client_ms_per_mib)} ms CPU/MiB; write + fsync {write.mb_s:.0f} MB/s). "
        f"Done one after the other, the bare stream and that step would make {serial:.0f} "
        f"MB/s; measured {api.best_mb_s:.0f} (gRPC's threads keep receiving into the "
        "flow-control window meanwhile; the database checkpoints, a commit per 8 MiB, add to "
        f"it). For {OVER_BARE_MIN:.1f}x of the bare servicer the step would have to run at "
        f"{needed:.0f} MB/s{', faster than the sha256 alone,' if needed > sha.mb_s else ''} "
        "or overlap the receiving, which on "
        f"{cpus} CPUs shared with the client only moves the bound to the CPU per MiB above."
    )


def _download_line(by: dict[str, ArtifactRow]) -> str | None:
    api, bare = by.get("api_file:download"), by.get("bare:download")
    if api is None or bare is None or api.server_faults_per_mib is None:
        return None
    return (
        f"- The download's memory: the API server takes {api.server_faults_per_mib:.0f} "
        f"page faults per MiB sent (the bare servicer {_num(bare.server_faults_per_mib, 0)}). "
        "With glibc's own malloc settings it took about 500, and downloaded at half the "
        "speed: the 1 MiB buffers of a ReadResponse (the message, its serialized copy) "
        "freed together leave more than the adaptive trim threshold free at the heap top, "
        "so free() gave it back to the kernel and the next chunk faulted it in again, "
        "zero-filled. The server and the workers now set malloc at start "
        "(core.serving.tune_malloc: a fixed 4 MiB mmap threshold, a 16 MiB trim threshold, "
        "two arenas; GLIBC_TUNABLES overrides each)."
    )


def _s3_upload_line(by: dict[str, ArtifactRow], blocks: dict[str, ArtifactBlock]) -> str | None:
    names = ("s3_parts_plain", "s3_complete_plain", "s3_parts_crc32", "s3_complete_crc32")
    if "api_s3:upload" not in by or any(n not in blocks for n in names):
        return None
    parts, complete, parts_crc, complete_crc = (blocks[n] for n in names)
    return (
        "- Why the S3 upload is slower: the S3 store makes a multipart upload of sequential "
        "8 MiB parts with no checksum algorithm declared. By hand, the same way, moto takes "
        f"{parts.seconds:.2f} s for the parts and {complete.seconds:.2f} s to complete "
        f"(moto {_num(parts.s3_ms_per_mib)} and {_num(complete.s3_ms_per_mib)} ms CPU/MiB); "
        "with ChecksumAlgorithm=CRC32 declared, as upload_fileobj does, "
        f"{parts_crc.seconds:.2f} s and {complete_crc.seconds:.2f} s (moto "
        f"{_num(parts_crc.s3_ms_per_mib)} and {_num(complete_crc.s3_ms_per_mib)}). "
        "botocore 1.36+ computes a CRC32 of every part by default either way, so declaring "
        "one saves the server nothing. Uploading parts in the background while the next "
        "8 MiB arrive (one, then two in flight) was tried and measured: the API server's "
        "S3 upload stayed at 68-88 MB/s in repeated quick runs, as sequential, because the "
        "route is bound by CPU, not by waiting: per MiB the client, the API server (gRPC, "
        "sha256, botocore's payload sha256 for the signature over http and its CRC32) and "
        "moto together spend the CPU figures above, about half again raw boto3's, on "
        "2 CPUs shared by the three processes (and, on this machine, other work). It "
        "stays sequential, so a killed server loses at most one part."
    )


def _s3_memory_line(by: dict[str, ArtifactRow]) -> str | None:
    plain = by.get("api_s3:upload")
    if plain is None or plain.server_growth_mib is None:
        return None
    return (
        f"- The S3 store's memory: the API server's RSS grows by {plain.server_growth_mib:.0f} "
        "MiB. Its writer buffers a part (8 MiB) and copies it out for UploadPart in "
        "whichever object IO thread runs the write; with glibc's own settings each of the 8 "
        "threads allocated from an arena of its own that kept what was freed in it (73 MiB "
        "of growth in the run before core.serving.tune_malloc limited the arenas to two)."
    )


def _s3_download_line(by: dict[str, ArtifactRow]) -> str | None:
    api, raw = by.get("api_s3:download"), by.get("boto3:download")
    if api is None or raw is None:
        return None
    return (
        "- The S3 download ratio says little about the API server: download_fileobj fetches "
        "the object in 8 MiB ranges (up to 10 at once), and moto answers each range by "
        "reading the whole object and slicing it (moto.s3 FakeKey.value), so moto spends "
        f"{_num(raw.cpu_ms_per_mib.get('S3 server'))} ms CPU per MiB on it against "
        f"{_num(api.cpu_ms_per_mib.get('S3 server'))} for the API server's one streamed GET. "
        "Against a real S3 the ranges make download_fileobj fast."
    )


def where(rows: list[ArtifactRow], blocks: list[ArtifactBlock], cpus: int) -> list[str]:
    """Differences between this run's rows and blocks, spelled out."""
    by = _by_key(rows)
    named = {b.key: b for b in blocks}
    lines = []
    for top, bottom, what in (("api_file", "bare", "File store"), ("api_s3", "boto3", "S3 store")):
        for direction in _DIRECTIONS:
            line = _pair_line(by, top, bottom, direction, what, cpus)
            if line:
                lines.append(line)
    for line in (
        _upload_line(by, named, cpus),
        _download_line(by),
        _s3_upload_line(by, named),
        _s3_memory_line(by),
        _s3_download_line(by),
    ):
        if line:
            lines.append(line)
    for direction in _DIRECTIONS:
        found = _ratio(by, "bare", "plain", direction)
        if found is not None:
            lines.append(
                f"- gRPC itself, {direction}: the bare servicer reaches {found[0]:.2f}x of the "
                f"plain file's {found[2].best_mb_s:.0f} MB/s (1 MiB messages serialized, "
                "framed and copied through HTTP/2 over loopback between two Python processes)."
            )
    return lines

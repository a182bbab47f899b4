"""The whole contract as one self-contained descriptor set, for clients without our toolchain.

``python -m devtools.descriptors`` (``make descriptors``) writes
``protos/agentic.protoset``: a ``google.protobuf.FileDescriptorSet`` of every
``protos/agentic/**`` file and everything they import (``buf/validate/validate.proto``,
``google/protobuf/*``, ``google/rpc/status``, ``google/type/date``), with source info so the
doc comments travel with it, plus what no file of ours imports but clients need:
``google/rpc/error_details.proto`` (to decode the ``google.rpc.BadRequest`` and
``ErrorInfo`` in ``grpc-status-details-bin``) and ``google/longrunning/operations.proto``
with its ``google/api`` imports (the server serves ``google.longrunning.Operations``;
googleapis-common-protos ships that file as ``operations_proto.proto``, and it is compiled
under its upstream name, the name the server's reflection and every other language's
googleapis know it by). It is committed, so a Node client (``@grpc/proto-loader``), grpcurl
(``-protoset``) or any other tool can load the contract from one file;
``tests/test_descriptors.py`` fails when it differs from a fresh build.

The set is built by the same protoc run as ``make gen``'s buf image (``protos/codegen.py
--image-only``), with the extra files appended. The bytes are deterministic for the pinned
``grpcio-tools``, ``protovalidate`` and ``googleapis-common-protos``: protoc's output is
appended as it is, never parsed and re-serialized (a re-serialization would order the
``buf.validate`` extensions differently depending on whether ``validate_pb2`` happened to be
imported). ``buf/validate/validate.proto`` carries no comments: its descriptor comes from
the protovalidate wheel, which ships none.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

__all__ = ["EXTRA_PROTOS", "PROTOSET", "build", "main"]

ROOT = Path(__file__).resolve().parent.parent
PROTOSET = ROOT / "protos" / "agentic.protoset"
"""The committed descriptor set."""

CODEGEN = ROOT / "protos" / "codegen.py"

EXTRA_PROTOS: tuple[str, ...] = (
    "google/rpc/error_details.proto",
    "google/protobuf/empty.proto",
    "google/api/http.proto",
    "google/api/annotations.proto",
    "google/api/launch_stage.proto",
    "google/api/client.proto",
    "google/api/field_behavior.proto",
    "google/longrunning/operations.proto",
)
"""Files no agentic file imports that clients need anyway, each after its imports."""

# Upstream name -> the file googleapis-common-protos ships it as.
_RENAMED = {"google/longrunning/operations.proto": "google/longrunning/operations_proto.proto"}


def _googleapis() -> Path:
    import google.rpc

    return Path(next(iter(google.rpc.__path__))).parent.parent


def _protoc(args: list[str], *, includes: list[Path]) -> None:
    """grpc-tools' protoc with ``includes``, then the well-known types and googleapis."""
    import grpc_tools

    paths = [*includes, Path(grpc_tools.__file__).parent / "_proto", _googleapis()]
    cmd = [sys.executable, "-m", "grpc_tools.protoc", *args, *(f"-I{p}" for p in paths)]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"descriptors: protoc failed ({result.returncode}): {result.stderr}")


def build(protos_root: Path = ROOT / "protos") -> bytes:
    """The serialized descriptor set of ``protos_root``, its imports and ``EXTRA_PROTOS``."""
    with tempfile.TemporaryDirectory(prefix="agentic-descriptors-") as tmp:
        image = Path(tmp) / "image.binpb"
        result = subprocess.run(
            [
                sys.executable,
                str(CODEGEN),
                "--protos",
                str(protos_root),
                "--image-only",
                str(image),
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise SystemExit(f"descriptors: codegen failed: {result.stderr}")
        contract = image.read_bytes()
        renamed = Path(tmp) / "renamed"
        for upstream, shipped in _RENAMED.items():
            (renamed / upstream).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_googleapis() / shipped, renamed / upstream)
        extras = Path(tmp) / "extras.binpb"
        # Without --include_imports: only the extra files themselves, in the order given,
        # whose imports must already be in the set (checked below): nothing appears twice.
        _protoc(
            ["--include_source_info", f"--descriptor_set_out={extras}", *EXTRA_PROTOS],
            includes=[renamed],
        )
        appended = extras.read_bytes()
    have = {f.name for f in descriptor_pb2.FileDescriptorSet.FromString(contract).file}
    for extra in descriptor_pb2.FileDescriptorSet.FromString(appended).file:
        if extra.name in have:
            raise SystemExit(f"descriptors: {extra.name} is already imported; drop it from EXTRA")
        missing = [dep for dep in extra.dependency if dep not in have]
        if missing:
            raise SystemExit(f"descriptors: {extra.name} imports {missing}, not in the set")
        have.add(extra.name)
    # Concatenated serializations of a message are its merge: `repeated file = 1` appends.
    return contract + appended


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the committed descriptor set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTOSET)
    parser.add_argument("--check", action="store_true", help="only report whether it is current")
    args = parser.parse_args(argv)
    wanted = build()
    out: Path = args.out
    if out.exists() and out.read_bytes() == wanted:
        return 0
    if args.check:
        print(f"{out} is stale: run `make descriptors`", file=sys.stderr)
        return 1
    out.write_bytes(wanted)
    print(f"descriptors: {len(wanted)} bytes -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

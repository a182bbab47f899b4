"""Generate Python code, type stubs and a buf image from the protos.

Everything lands under one import root, ``build/gen`` (package ``agentic.<area>.v1``
mirrors ``protos/agentic/<area>/v1``), which ``make venv`` puts on ``sys.path``.
Generated code is not committed: it is rebuilt from the protos by ``make gen``.

``buf/validate/validate.proto`` is a third-party file that we do not commit. The pinned
``protovalidate`` wheel ships no ``.proto``, but its generated module embeds the
serialized ``FileDescriptorProto`` of exactly the version its validator enforces. We read
that descriptor at build time (parsing the module's source, not importing it) and hand it
to protoc with ``--descriptor_set_in``: protoc resolves the import from it and generates
``buf.validate.validate_pb2`` for the google.protobuf runtime, so the extension that
carries our field rules is registered wherever our messages are imported.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

VALIDATE_PROTO = "buf/validate/validate.proto"
MYPY_PLUGINS = ("mypy", "mypy_grpc")


def validate_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto of buf/validate/validate.proto, from the protovalidate wheel."""
    import protovalidate  # the pinned package is the single source of the rules' schema

    source = Path(protovalidate.__file__).parent / "_gen" / "buf" / "validate" / "validate_pb.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "file_desc"
            and node.args
        ):
            blob = ast.literal_eval(node.args[0])
            if isinstance(blob, bytes):
                fdp = descriptor_pb2.FileDescriptorProto.FromString(blob)
                if fdp.name == VALIDATE_PROTO:
                    return fdp
    raise SystemExit(f"codegen: no descriptor for {VALIDATE_PROTO} found in {source}")


def protoc(args: list[str]) -> None:
    """Run the protoc bundled with grpcio-tools, failing loudly."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    # google/rpc/*.proto ship with googleapis-common-protos (whose _pb2 modules we import at
    # run time); it is searched after grpc-tools' copy of the well-known types.
    import google.rpc

    googleapis = Path(next(iter(google.rpc.__path__))).parent.parent
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins live beside this interpreter
    plugins = [
        f"--plugin=protoc-gen-{name}={bindir / f'protoc-gen-{name}'}" for name in MYPY_PLUGINS
    ]
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *plugins,
        *args,
        f"-I{include}",
        f"-I{googleapis}",
    ]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"codegen: protoc failed ({result.returncode}): {' '.join(cmd)}")


def proto_sources(protos_root: Path) -> list[str]:
    """Every .proto under ``protos_root``, relative to it, sorted."""
    sources = sorted(str(p.relative_to(protos_root)) for p in protos_root.rglob("*.proto"))
    if not sources:
        raise SystemExit(f"codegen: no .proto files under {protos_root}")
    return sources


def write_image(protos_root: Path, image: Path) -> None:
    """A self-contained descriptor set of ``protos_root`` with source info (a buf image).

    `buf lint` / `buf breaking` read it (buf cannot resolve the validate.proto import
    from a directory without the BSR), and server reflection serves it so that
    `grpcurl describe` shows the doc comments.
    """
    image.parent.mkdir(parents=True, exist_ok=True)
    deps = image.with_name(image.name + ".deps")
    deps.write_bytes(
        descriptor_pb2.FileDescriptorSet(file=[validate_descriptor()]).SerializeToString()
    )
    protoc(
        [
            f"-I{protos_root}",
            f"--descriptor_set_in={deps}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={image}",
            *proto_sources(protos_root),
        ]
    )
    deps.unlink()


def main() -> None:
    """Regenerate build/gen and build/protos.binpb from protos/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protos", type=Path, default=Path("protos"))
    parser.add_argument("--out", type=Path, default=Path("build"))
    parser.add_argument(
        "--image-only",
        type=Path,
        metavar="PATH",
        help="only write a buf image of --protos to PATH (for `buf breaking` against a ref)",
    )
    ns = parser.parse_args()
    if ns.image_only:
        write_image(ns.protos, ns.image_only)
        return

    protos_root: Path = ns.protos
    build: Path = ns.out
    final = build / "gen"
    # Generate beside the live tree and swap it in whole, so a process importing from
    # build/gen never sees it half-written.
    gen = build / f"gen.tmp-{os.getpid()}"
    shutil.rmtree(gen, ignore_errors=True)
    gen.mkdir(parents=True)

    deps = descriptor_pb2.FileDescriptorSet()
    deps.file.append(validate_descriptor())
    deps_path = build / "protovalidate.binpb"
    deps_path.write_bytes(deps.SerializeToString())

    sources = proto_sources(protos_root)
    common = [f"-I{protos_root}", f"--descriptor_set_in={deps_path}"]
    protoc(
        [
            *common,
            f"--python_out={gen}",
            f"--grpc_python_out={gen}",
            f"--mypy_out={gen}",
            f"--mypy_grpc_out={gen}",
            *sources,
        ]
    )
    # validate_pb2 is generated separately: it has no services, and we want no stubs
    # of a third-party file to take part in our type checking beyond its messages.
    protoc([*common, f"--python_out={gen}", f"--mypy_out={gen}", VALIDATE_PROTO])
    write_image(protos_root, gen / "agentic" / "_descriptors.binpb")
    old = build / f"gen.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    gen.rename(final)
    shutil.copyfile(final / "agentic" / "_descriptors.binpb", build / "protos.binpb")
    shutil.rmtree(old, ignore_errors=True)
    print(f"codegen: {len(sources)} proto file(s) -> {final}")


if __name__ == "__main__":
    main()

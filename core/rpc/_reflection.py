"""Server reflection that keeps the protos' doc comments.

Generated ``_pb2`` modules register descriptors without ``source_code_info``, so stock
reflection shows operators the shape of every message but none of its documentation.
Codegen also writes a descriptor set with source info (``agentic/_descriptors.binpb`` in
the generated tree); reflection answers file requests from it, and everything else from
the default pool, so ``grpcurl describe`` prints the comments written in ``protos/``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import agentic
import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection

DESCRIPTOR_SET = "_descriptors.binpb"


def _load_sources() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    for root in agentic.__path__:
        path = Path(root) / DESCRIPTOR_SET
        if path.exists():
            files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
            return {f.name: f for f in files}
    return {}  # without the set, reflection still works, just without comments


class _File:
    """A FileDescriptor stand-in whose CopyToProto includes source info when we have it."""

    def __init__(self, base: Any, sources: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        self._base = base
        self._sources = sources
        self.name: str = base.name

    @property
    def dependencies(self) -> list[_File]:
        return [_File(d, self._sources) for d in self._base.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        source = self._sources.get(self.name)
        if source is not None:
            proto.CopyFrom(source)
        else:
            self._base.CopyToProto(proto)


class _Pool:
    """The default descriptor pool, with files wrapped in ``_File``."""

    def __init__(self) -> None:
        self._base = descriptor_pool.Default()
        self._sources = _load_sources()

    def FindFileByName(self, name: str) -> _File:
        return _File(self._base.FindFileByName(name), self._sources)

    def FindFileContainingSymbol(self, symbol: str) -> _File:
        return _File(self._base.FindFileContainingSymbol(symbol), self._sources)

    def __getattr__(self, name: str) -> Any:  # message and extension look-ups
        return getattr(self._base, name)


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection for ``service_names`` plus reflection itself, comments included."""
    names = (*service_names, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=_Pool())

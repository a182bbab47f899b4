"""Claim checks in task specs: ``ArtifactRef`` fields filled in by the server.

A spec names an artifact by id only (``ArtifactRef.artifact_id``); when the task is
accepted, the server fills in where the bytes are (object key) and what they must hash
to (size, sha256), after checking that the caller reaches the artifact, that it is READY
and in the task's project. The worker then reads the bytes itself and verifies them:
bytes never travel through the queue. Any kind whose spec holds ``ArtifactRef`` fields,
at any depth, singly or repeated, gets this without code of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from agentic.artifacts.v1 import artifacts_pb2
from google.protobuf.message import Message

from core.rpc import FieldViolation, InvalidArgument
from core.tasks import DOMAIN
from server.auth import Principal

__all__ = ["RefResolver", "artifact_refs", "resolve_refs"]

RefResolver = Callable[[str, str, Principal], Awaitable[artifacts_pb2.ArtifactRef]]
"""(artifact id, project id, principal) -> the complete reference, or an ApiError."""

_REF = artifacts_pb2.ArtifactRef.DESCRIPTOR.full_name


def artifact_refs(
    message: Message, path: str = ""
) -> Iterator[tuple[str, artifacts_pb2.ArtifactRef]]:
    """(field path, ref) of every ArtifactRef set in ``message``, depth first."""
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is None or kind.GetOptions().map_entry:
            continue  # scalars; maps of messages hold no refs in any spec
        where = f"{path}{field.name}"
        items = list(value) if field.is_repeated else [value]
        for index, item in enumerate(items):
            at = f"{where}[{index}]" if field.is_repeated else where
            if kind.full_name == _REF:
                yield at, item
            else:
                yield from artifact_refs(item, at + ".")


async def resolve_refs(
    spec: Message, spec_field: str, project_id: str, principal: Principal, resolve: RefResolver
) -> None:
    """Fill in every ArtifactRef of ``spec`` (in place) for a task of ``project_id``."""
    refs = list(artifact_refs(spec, spec_field + "."))
    if refs and not project_id:
        raise InvalidArgument(
            [
                FieldViolation(
                    "project_id",
                    "is required when the spec names artifacts (they belong to a project)",
                    "project_id.required",
                )
            ],
            domain=DOMAIN,
        )
    for _, ref in refs:
        ref.CopyFrom(await resolve(ref.artifact_id, project_id, principal))

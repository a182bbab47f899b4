"""ArtifactService servicer: map protos to domain calls and back, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from agentic.artifacts.v1 import artifacts_pb2, artifacts_pb2_grpc

from server.access import current_principal
from server.artifacts._facade import Artifacts


class ArtifactService(artifacts_pb2_grpc.ArtifactServiceServicer):
    """agentic.artifacts.v1.ArtifactService over the Artifacts facade."""

    def __init__(self, artifacts: Artifacts) -> None:
        self._artifacts = artifacts

    async def CreateUpload(
        self, request: artifacts_pb2.CreateUploadRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.CreateUploadResponse:
        """Create an UPLOADING artifact and name its upload."""
        artifact, name = await self._artifacts.create_upload(request, current_principal())
        return artifacts_pb2.CreateUploadResponse(artifact=artifact, upload_name=name)

    async def Write(
        self,
        request_iterator: AsyncIterator[artifacts_pb2.WriteRequest],
        context: grpc.aio.ServicerContext,
    ) -> artifacts_pb2.WriteResponse:
        """Append the stream's bytes; finish when asked."""
        committed = await self._artifacts.uploads.write(request_iterator, current_principal())
        return artifacts_pb2.WriteResponse(committed_size=committed)

    async def QueryWriteStatus(
        self, request: artifacts_pb2.QueryWriteStatusRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.QueryWriteStatusResponse:
        """Committed size and completeness of an upload."""
        committed, complete = await self._artifacts.uploads.query(
            request.resource_name, current_principal()
        )
        return artifacts_pb2.QueryWriteStatusResponse(committed_size=committed, complete=complete)

    async def Read(
        self, request: artifacts_pb2.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[artifacts_pb2.ReadResponse]:
        """Stream a READY artifact's bytes."""
        async for piece in self._artifacts.read(request, current_principal()):
            yield artifacts_pb2.ReadResponse(data=piece)

    async def GetArtifact(
        self, request: artifacts_pb2.GetArtifactRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.GetArtifactResponse:
        """Return one artifact."""
        artifact = await self._artifacts.get(request.id, current_principal())
        return artifacts_pb2.GetArtifactResponse(artifact=artifact)

    async def ListArtifacts(
        self, request: artifacts_pb2.ListArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.ListArtifactsResponse:
        """Return one page of a project's artifacts."""
        return await self._artifacts.list(request, current_principal())

    async def UpdateArtifact(
        self, request: artifacts_pb2.UpdateArtifactRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.UpdateArtifactResponse:
        """Apply the masked fields, conditionally on the etag."""
        paths = set(request.update_mask.paths)
        artifact = await self._artifacts.update(
            request.id,
            etag=request.etag,
            name=request.artifact.name if "name" in paths else None,
            work_products=list(request.artifact.work_products)
            if "work_products" in paths
            else None,
            principal=current_principal(),
        )
        return artifacts_pb2.UpdateArtifactResponse(artifact=artifact)

    async def DeleteArtifact(
        self, request: artifacts_pb2.DeleteArtifactRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.DeleteArtifactResponse:
        """Delete an artifact and its bytes, conditionally on the etag."""
        await self._artifacts.delete(request.id, etag=request.etag, principal=current_principal())
        return artifacts_pb2.DeleteArtifactResponse()

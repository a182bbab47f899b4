"""SessionService servicer: map protos to the Sessions facade and back, nothing more.

Requests arrive already validated against their proto rules (see core.rpc); domain
errors are mapped to statuses by the interceptor.
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from agentic.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from server.access import current_principal
from server.sessions._facade import Sessions

__all__ = ["SessionService"]


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.fromtimestamp(seconds, UTC))
    return stamp


def _summary(request: Message) -> str:
    return json_format.MessageToJson(request, indent=None, sort_keys=True)


class SessionService(sessions_pb2_grpc.SessionServiceServicer):
    """agentic.sessions.v1.SessionService over the Sessions facade."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def RevokeSession(
        self, request: sessions_pb2.RevokeSessionRequest, context: grpc.aio.ServicerContext
    ) -> sessions_pb2.RevokeSessionResponse:
        """End the caller's own session."""
        revocation = await self._sessions.revoke_session(current_principal(), _summary(request))
        return sessions_pb2.RevokeSessionResponse(
            session_id=revocation.session_id, revoke_time=_timestamp(revocation.revoke_time)
        )

    async def RevokeSessions(
        self, request: sessions_pb2.RevokeSessionsRequest, context: grpc.aio.ServicerContext
    ) -> sessions_pb2.RevokeSessionsResponse:
        """End every session of a subject issued before a time (default: now)."""
        issued_before = (
            request.issued_before.ToDatetime(UTC).timestamp()
            if request.HasField("issued_before")
            else None
        )
        revocation = await self._sessions.revoke_sessions(
            request.subject, issued_before, current_principal(), _summary(request)
        )
        assert revocation.issued_before is not None  # set for every subject revocation
        return sessions_pb2.RevokeSessionsResponse(
            subject=revocation.subject,
            issued_before=_timestamp(revocation.issued_before),
            revoke_time=_timestamp(revocation.revoke_time),
        )

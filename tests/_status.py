"""Decoding a failed call's google.rpc.Status, the way every client of ours reads errors."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class RichStatus:
    """A failed call: its code, message and the google.rpc details it carried."""

    code: grpc.StatusCode
    message: str
    reason: str
    """ErrorInfo.reason ("" when the status carried no ErrorInfo)."""
    domain: str
    violations: dict[str, str]
    """BadRequest field violations: field -> description."""
    violation_reasons: dict[str, str]
    """The same violations: field -> reason (the protovalidate rule id)."""


def rich_status(error: grpc.RpcError) -> RichStatus:
    """Decode ``error``; fails the test when it carries no google.rpc.Status details."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status details on {error.code()}"
    reason = domain = ""
    violations: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain = info.reason, info.domain
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
            reasons = {v.field: v.reason for v in bad.field_violations}
    return RichStatus(error.code(), error.details() or "", reason, domain, violations, reasons)

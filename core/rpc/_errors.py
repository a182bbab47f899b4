"""One error taxonomy for every service, mapped to gRPC status in one place.

Domain code raises these; the interceptor in ``_interceptor`` turns them into a
``google.rpc.Status`` carrying ``ErrorInfo(reason, domain)`` and, for bad input,
``BadRequest.field_violations``. Nothing else in the code base builds a status.

    ApiError                      (abstract: carries code, reason, domain, message)
    ├── InvalidArgument           INVALID_ARGUMENT, with field violations
    ├── NotFound                  NOT_FOUND
    ├── AlreadyExists             ALREADY_EXISTS
    ├── Aborted                   ABORTED (optimistic concurrency: stale etag)
    ├── FailedPrecondition        FAILED_PRECONDITION
    ├── OutOfRange                OUT_OF_RANGE (an offset past the end, a wrong write offset)
    ├── DataLoss                  DATA_LOSS (bytes that do not hash to what was promised)
    ├── Unauthenticated           UNAUTHENTICATED
    ├── PermissionDenied          PERMISSION_DENIED
    ├── ResourceExhausted         RESOURCE_EXHAUSTED, with an optional retry delay
    ├── Unavailable               UNAVAILABLE (a dependency is down; safe to retry)
    └── Internal                  INTERNAL (a bug on our side, never the client's input)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DEFAULT_DOMAIN = "agentic.backend"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: its path in the request (``project.name``) and why it is bad."""

    field: str
    description: str
    reason: str = ""


class ApiError(Exception):
    """Base of every error a client may see; subclasses fix the gRPC code."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        domain: str = DEFAULT_DOMAIN,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})

    def details(self) -> list[any_pb2.Any]:
        """The google.rpc detail messages of this error, ErrorInfo first."""
        info = any_pb2.Any()
        info.Pack(
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=self.domain, metadata=self.metadata
            )
        )
        return [info]

    def to_status(self) -> grpc.Status:
        """The rich gRPC status (code, message, grpc-status-details-bin trailer)."""
        proto = status_pb2.Status(
            code=_CODE_NUMBERS[self.code], message=self.message, details=self.details()
        )
        return rpc_status.to_status(proto)


class InvalidArgument(ApiError):
    """The request breaks a field rule; lists every offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        violations: Sequence[FieldViolation],
        *,
        message: str | None = None,
        reason: str = "INVALID_ARGUMENT",
        domain: str = DEFAULT_DOMAIN,
    ) -> None:
        self.violations = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid request: {summary}", reason=reason, domain=domain)

    def details(self) -> list[any_pb2.Any]:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description, reason=v.reason
                    )
                    for v in self.violations
                ]
            )
        )
        return [*super().details(), bad]


class NotFound(ApiError):
    """The named object does not exist (or the caller may not know it does)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ApiError):
    """An object with the same identity already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(ApiError):
    """A concurrency conflict: the caller should read again and retry."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(ApiError):
    """The system is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(ApiError):
    """An offset or position outside what exists (ByteStream read and write offsets)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class DataLoss(ApiError):
    """Bytes are not what they were declared to be (a checksum mismatch)."""

    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(ApiError):
    """No valid credentials came with the call."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ApiError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ApiError):
    """A limit was hit; ``retry_after_seconds`` becomes a RetryInfo detail."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        retry_after_seconds: float | None = None,
        domain: str = DEFAULT_DOMAIN,
    ) -> None:
        super().__init__(message, reason=reason, domain=domain)
        self.retry_after_seconds = retry_after_seconds

    def details(self) -> list[any_pb2.Any]:
        out = super().details()
        if self.retry_after_seconds is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after_seconds * 1e9))
            retry = any_pb2.Any()
            retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            out.append(retry)
        return out


class Unavailable(ApiError):
    """A dependency is down; the call did not take effect and may be retried."""

    code = grpc.StatusCode.UNAVAILABLE


class Internal(ApiError):
    """A defect on our side. Its message never echoes request data or internals."""

    code = grpc.StatusCode.INTERNAL


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED: code_pb2.ABORTED,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE: code_pb2.OUT_OF_RANGE,
    grpc.StatusCode.DATA_LOSS: code_pb2.DATA_LOSS,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
    grpc.StatusCode.UNKNOWN: code_pb2.UNKNOWN,
}

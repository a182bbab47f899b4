"""gRPC plumbing shared by every service: the error taxonomy and the server interceptor."""

from core.rpc._errors import (
    Aborted,
    AlreadyExists,
    ApiError,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from core.rpc._interceptor import UNDECODABLE_MESSAGE, ServiceInterceptor
from core.rpc._reflection import enable_reflection
from core.rpc._validation import validate_request

__all__ = [
    "UNDECODABLE_MESSAGE",
    "Aborted",
    "AlreadyExists",
    "ApiError",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServiceInterceptor",
    "Unauthenticated",
    "Unavailable",
    "enable_reflection",
    "validate_request",
]

"""gRPC plumbing shared by every service: the error taxonomy and the server interceptor."""

from typing import TYPE_CHECKING

from core._lazy import lazy_attributes
from core.rpc._errors import (
    Aborted,
    AlreadyExists,
    ApiError,
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

if TYPE_CHECKING:
    from core.rpc._interceptor import UNDECODABLE_MESSAGE, ServiceInterceptor
    from core.rpc._reflection import enable_reflection
    from core.rpc._validation import validate_request

# The errors are what everyone needs (a worker too); the interceptor, validation and
# reflection load on first use, since they pull in protovalidate and gRPC's services.
__getattr__ = lazy_attributes(
    __name__,
    {
        "UNDECODABLE_MESSAGE": "core.rpc._interceptor",
        "ServiceInterceptor": "core.rpc._interceptor",
        "enable_reflection": "core.rpc._reflection",
        "validate_request": "core.rpc._validation",
    },
)

__all__ = [
    "UNDECODABLE_MESSAGE",
    "Aborted",
    "AlreadyExists",
    "ApiError",
    "DataLoss",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "ServiceInterceptor",
    "Unauthenticated",
    "Unavailable",
    "enable_reflection",
    "validate_request",
]

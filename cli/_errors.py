"""Exit codes and how a failed call is told to a person.

The codes follow ``kubectl wait`` / ``temporal workflow execute``: the task's own outcome
first, then the CLI's reasons for not knowing it, and BSD's ``EX_USAGE`` for bad usage::

    0  SUCCEEDED (or any command that did what it was asked)
    1  FAILED, or any other gRPC error (NOT_FOUND, INVALID_ARGUMENT, ...)
    2  CANCELLED
    3  timed out (--timeout passed before the task ended)
    4  the server was unreachable or refused us (UNAVAILABLE, UNAUTHENTICATED,
       PERMISSION_DENIED)
    64 bad usage (an unknown flag, a bad value)
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = ["ExitCode", "RpcFailure", "UsageError", "describe", "exit_code_of"]


class ExitCode(enum.IntEnum):
    """What the process exit status means."""

    OK = 0
    FAILED = 1
    CANCELLED = 2
    TIMED_OUT = 3
    UNREACHABLE = 4
    USAGE = 64
    INTERRUPTED = 130


# Codes that mean "we could not talk to the server as ourselves", not "the request was bad".
_REFUSED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


class UsageError(Exception):
    """Arguments that parse but cannot be used together (exit 64)."""


@dataclass(frozen=True)
class RpcFailure:
    """A failed call decoded from its google.rpc.Status (grpc-status-details-bin)."""

    code: str
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)
    """BadRequest field violations, (field, description), in the server's order."""
    retry_after_seconds: float | None = None

    def as_dict(self) -> dict[str, object]:
        """The stable JSON form (``--output json`` prints it to stderr)."""
        return {
            "type": "error",
            "code": self.code,
            "message": self.message,
            "reason": self.reason,
            "domain": self.domain,
            "metadata": self.metadata,
            "field_violations": [{"field": f, "description": d} for f, d in self.violations],
        }

    def lines(self) -> list[str]:
        """The human form: code and message, reason, then one ``field: message`` per line."""
        out = [f"error: {self.code}: {self.message}"]
        if self.reason:
            extra = ", ".join(f"{k}={v}" for k, v in sorted(self.metadata.items()))
            out.append(f"reason: {self.reason}" + (f" ({extra})" if extra else ""))
        out.extend(f"  {name}: {description}" for name, description in self.violations)
        if self.retry_after_seconds is not None:
            out.append(f"retry after {self.retry_after_seconds:g} s")
        return out


def describe(error: grpc.RpcError) -> RpcFailure:
    """Decode ``error``: its code, message, ErrorInfo, BadRequest and RetryInfo if sent."""
    code = error.code()
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    message = str(error.details() or "")
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # the trailer disagrees with the call's own code/message
        status = None
    if status is None:
        return RpcFailure(code=name, message=message)
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    retry: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info_retry = error_details_pb2.RetryInfo()
            detail.Unpack(info_retry)
            retry = info_retry.retry_delay.ToTimedelta().total_seconds()
    return RpcFailure(
        code=name,
        message=message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        violations=violations,
        retry_after_seconds=retry,
    )


def exit_code_of(error: grpc.RpcError) -> ExitCode:
    """4 when the server was unreachable or refused the caller, 1 for any other error."""
    return ExitCode.UNREACHABLE if error.code() in _REFUSED else ExitCode.FAILED

"""The sidecar's domain errors, on top of the shared taxonomy in ``core.rpc``.

They are mapped to ``google.rpc.Status`` in one place, the shared ``ServiceInterceptor``
(ErrorInfo with domain ``agentic.cache.v1`` always, BadRequest field violations for bad
input; protovalidate violations of the request become InvalidArgument there too, and
anything unexpected becomes INTERNAL, never UNKNOWN)::

    core.rpc.ApiError
    └── core.rpc.InvalidArgument      INVALID_ARGUMENT (+ BadRequest)
        ├── UnknownNamespace            reason UNKNOWN_NAMESPACE, field namespace
        ├── ValueTooLarge               reason VALUE_TOO_LARGE, field value
        ├── InvalidLeaseToken           reason INVALID_LEASE_TOKEN, field lease_token
        └── InvalidPageToken            reason INVALID_PAGE_TOKEN, field page_token
    └── core.rpc.Unavailable          UNAVAILABLE
        └── KeyDumpFailed               reason KEY_DUMP_FAILED (ListKeys: a node's
                                        lru_crawler metadump failed)

An unreachable Memcached is deliberately not an error: reads degrade to "load from
the origin, do not fill" (see _leases.py).
"""

from __future__ import annotations

from core.rpc import FieldViolation, InvalidArgument, Unavailable

__all__ = [
    "DOMAIN",
    "InvalidLeaseToken",
    "InvalidPageToken",
    "KeyDumpFailed",
    "UnknownNamespace",
    "ValueTooLarge",
]

DOMAIN = "agentic.cache.v1"
"""ErrorInfo.domain of every error this service returns."""


class UnknownNamespace(InvalidArgument):
    """The namespace is not in the sidecar's policy file."""

    def __init__(self, namespace: str) -> None:
        description = f"namespace {namespace!r} is not configured in the cache policy"
        super().__init__(
            [FieldViolation("namespace", description, "UNKNOWN_NAMESPACE")],
            message=description,
            reason="UNKNOWN_NAMESPACE",
            domain=DOMAIN,
        )
        self.metadata = {"namespace": namespace}


class ValueTooLarge(InvalidArgument):
    """A Fill value is larger than the namespace's max_value_bytes; nothing was stored."""

    def __init__(self, namespace: str, size: int, limit: int) -> None:
        description = (
            f"value is {size} bytes, more than the {limit} bytes namespace "
            f"{namespace!r} accepts; nothing was stored"
        )
        super().__init__(
            [FieldViolation("value", description, "VALUE_TOO_LARGE")],
            message=description,
            reason="VALUE_TOO_LARGE",
            domain=DOMAIN,
        )
        self.metadata = {"namespace": namespace, "size": str(size), "limit": str(limit)}


class InvalidLeaseToken(InvalidArgument):
    """A Fill's lease token is not one a sidecar issued (malformed)."""

    def __init__(self) -> None:
        description = "lease_token is not a token returned by Get"
        super().__init__(
            [FieldViolation("lease_token", description, "INVALID_LEASE_TOKEN")],
            message=description,
            reason="INVALID_LEASE_TOKEN",
            domain=DOMAIN,
        )


class InvalidPageToken(InvalidArgument):
    """A ListKeys page token is not one ListKeys returned for this namespace."""

    def __init__(self) -> None:
        description = "page_token is not a next_page_token ListKeys returned for this namespace"
        super().__init__(
            [FieldViolation("page_token", description, "INVALID_PAGE_TOKEN")],
            message=description,
            reason="INVALID_PAGE_TOKEN",
            domain=DOMAIN,
        )


class KeyDumpFailed(Unavailable):
    """A Memcached node did not complete its key dump (ListKeys); try again."""

    def __init__(self, address: str, why: str) -> None:
        super().__init__(
            f"memcached {address}: key dump failed ({why}); try again",
            reason="KEY_DUMP_FAILED",
            domain=DOMAIN,
        )
        self.metadata = {"node": address}

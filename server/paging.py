"""Opaque page tokens for keyset pagination over (create_time, id), shared by every List RPC.

A token records where the previous page ended and a fingerprint of the filter it was
issued for, so a token replayed with another filter is rejected instead of silently
skipping rows. Tokens are base64url JSON: opaque to clients, cheap to check here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from core.rpc import FieldViolation, InvalidArgument

_VERSION = 1


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last row of the previous page."""

    create_time: datetime
    id: str


def _fingerprint(filter_key: str) -> str:
    return hashlib.sha256(filter_key.encode()).hexdigest()[:16]


def encode(cursor: Cursor, filter_key: str) -> str:
    """Token that resumes after ``cursor`` for the filter named by ``filter_key``."""
    body = {
        "v": _VERSION,
        "t": cursor.create_time.isoformat(),
        "i": cursor.id,
        "f": _fingerprint(filter_key),
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad_token(description: str) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("page_token", description, reason="page_token.invalid")],
        reason="INVALID_PAGE_TOKEN",
    )


def decode(token: str, filter_key: str) -> Cursor | None:
    """The cursor in ``token`` (None for an empty token); INVALID_ARGUMENT if it is not ours."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise ValueError("unknown token version")
        create_time = datetime.fromisoformat(str(body["t"]))
        row_id = str(body["i"])
        fingerprint = str(body["f"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise _bad_token("is not a page token issued by this service") from None
    if fingerprint != _fingerprint(filter_key):
        raise _bad_token("was issued for a different filter; start again without a token")
    return Cursor(create_time=create_time, id=row_id)

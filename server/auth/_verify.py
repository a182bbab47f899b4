"""Bearer token in, ``Principal`` out: RS256 JWT verification with PyJWT.

Every failure raises ``Unauthenticated`` with a fixed message chosen here. Neither the
token, its claims nor PyJWT's exception text (which can quote the input) ever reaches a
message or a log line, and exceptions are raised ``from None`` so that a logged
traceback does not carry them either.

The algorithm is RS256, fixed in code: the token's ``alg`` header is only compared with
it, never used to choose a verifier (which is how ``alg=none`` and "HS256 signed with
the public key" attacks work).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from core.rpc import Unauthenticated
from server.auth._principal import Principal, roles_from_claim

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub")
DEFAULT_LEEWAY_SECONDS = 30.0
# Far above any real access token (a few hundred bytes to ~2 KiB), and low enough that
# a hostile header cannot make us base64-decode and parse megabytes per call.
MAX_TOKEN_CHARS = 8192
# The subject becomes an owner id in the database and in logs: keep it boring.
_SUBJECT = re.compile(r"[A-Za-z0-9._@-]{1,128}")
# JWS compact serialization: three base64url segments (the signature may be empty).
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_MAX_KID_CHARS = 256
# A session id names a record in the cache and a row in the database: keep it boring too
# (a UUID, or any identity provider's opaque id of up to 128 such characters).
_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class KeySource(Protocol):
    """Where verification keys come from (``JwksKeySet`` in production)."""

    async def key_for(self, kid: str) -> RSAPublicKey | None:
        """The public key with id ``kid``, or None when there is none."""
        ...


class TokenVerifier:
    """Turns an ``authorization`` metadata value into a ``Principal`` or ``Unauthenticated``."""

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience must be non-empty")
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must be >= 0")
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway_seconds = leeway_seconds

    async def authenticate(self, authorization: str | None) -> Principal:
        """Verify ``Bearer <jwt>``; raise ``Unauthenticated`` for anything but a valid token."""
        token = _bearer_token(authorization)
        kid = _checked_kid(token)
        key = await self._keys.key_for(kid)
        if key is None:
            raise _fail("token signing key is not known", "UNKNOWN_KEY")
        claims = self._decode(token, key)
        subject = claims["sub"]
        if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
            raise _fail("token subject is not acceptable", "TOKEN_INVALID")
        roles = claims.get("roles", [])
        # A roles claim that is not a list of strings is a token made by something that
        # does not speak our contract: refuse the token rather than guess at no roles.
        # (Unknown strings inside a well-formed list are still dropped, by roles_from_claim.)
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise _fail("token is malformed", "TOKEN_INVALID")
        session_id = claims.get("sid")
        # Absent: a session-less service token (server.sessions decides who may use one).
        # Present but not a boring string: a token of something that does not speak our
        # contract, refused like a malformed roles claim.
        if session_id is not None and (
            not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id)
        ):
            raise _fail("token session id is not acceptable", "TOKEN_INVALID")
        return Principal(
            subject=subject,
            roles=roles_from_claim(roles),
            expires_at=float(claims["exp"]),
            session_id=session_id,
            issued_at=float(claims["iat"]),
        )

    def _decode(self, token: str, key: RSAPublicKey) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway_seconds,
                options={"require": list(REQUIRED_CLAIMS), "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise _fail("token has expired", "TOKEN_EXPIRED") from None
        except jwt.ImmatureSignatureError:
            # Raised for nbf, and for an iat in the future beyond the leeway.
            raise _fail("token is not yet valid", "TOKEN_NOT_YET_VALID") from None
        except jwt.MissingRequiredClaimError as exc:
            # exc.claim is one of our REQUIRED_CLAIMS, not token content; still check.
            claim = exc.claim if exc.claim in REQUIRED_CLAIMS else "a claim"
            raise _fail(f"token lacks required claim {claim}", "TOKEN_INVALID") from None
        except jwt.InvalidIssuerError:
            raise _fail("token issuer is not accepted", "TOKEN_INVALID") from None
        except jwt.InvalidAudienceError:
            raise _fail("token audience is not accepted", "TOKEN_INVALID") from None
        except jwt.InvalidSignatureError:
            raise _fail("token signature is invalid", "TOKEN_INVALID") from None
        except jwt.PyJWTError:
            raise _fail("token is malformed", "TOKEN_INVALID") from None


def _bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.strip():
        raise _fail("a Bearer token is required", "TOKEN_MISSING")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _fail("a Bearer token is required", "TOKEN_MISSING")
    if len(token) > MAX_TOKEN_CHARS or not _COMPACT_JWS.fullmatch(token):
        raise _fail("token is malformed", "TOKEN_INVALID")
    return token


def _checked_kid(token: str) -> str:
    """The ``kid`` of an RS256 token, read from the header before the signature is checked."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _fail("token is malformed", "TOKEN_INVALID") from None
    if header.get("alg") != ALGORITHM:
        raise _fail("token algorithm is not accepted", "TOKEN_INVALID")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_CHARS:
        raise _fail("token has no usable key id", "TOKEN_INVALID")
    return kid


def _fail(message: str, reason: str) -> Unauthenticated:
    log.debug("authentication failed: %s", reason)
    return Unauthenticated(message, reason=reason)

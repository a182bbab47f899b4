"""Token helpers for tests: a bad token for every way verification must fail, header
values, and a JWKS served over loopback HTTP that counts its requests."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.devkeys import DevKeys
from server.auth import Role

# The reason each bad token must be rejected with (ErrorInfo.reason of UNAUTHENTICATED).
EXPECTED_REASONS: dict[str, str] = {
    "expired": "TOKEN_EXPIRED",
    "not_yet_valid": "TOKEN_NOT_YET_VALID",
    "future_iat": "TOKEN_NOT_YET_VALID",
    "wrong_issuer": "TOKEN_INVALID",
    "wrong_audience": "TOKEN_INVALID",
    "wrong_algorithm": "TOKEN_INVALID",
    "alg_none": "TOKEN_INVALID",
    "hs256_with_public_key": "TOKEN_INVALID",
    "unknown_kid": "UNKNOWN_KEY",
    "missing_kid": "TOKEN_INVALID",
    "missing_exp": "TOKEN_INVALID",
    "missing_iat": "TOKEN_INVALID",
    "missing_nbf": "TOKEN_INVALID",
    "missing_iss": "TOKEN_INVALID",
    "missing_aud": "TOKEN_INVALID",
    "missing_sub": "TOKEN_INVALID",
    "invalid_subject": "TOKEN_INVALID",
    "malformed": "TOKEN_INVALID",
    "bad_signature": "TOKEN_INVALID",
}


def bearer(token: str) -> str:
    """The ``authorization`` metadata value carrying ``token``."""
    return f"Bearer {token}"


def claims(
    *, issuer: str, audience: str, sub: str = "mallory", now: float | None = None
) -> dict[str, Any]:
    """A complete, currently valid claim set (one hour) with the Administrator role."""
    issued_at = int(time.time() if now is None else now)
    return {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + 3600,
        # Administrator on purpose: if any of these were accepted, it would grant everything.
        "roles": [Role.ADMINISTRATOR.value],
    }


def bad_tokens(keys: DevKeys, *, issuer: str, audience: str) -> dict[str, str]:
    """One token per way a token must be refused, keyed as in ``EXPECTED_REASONS``.

    Apart from the case's own defect each token is valid (signed by the current key of
    ``keys``, right issuer and audience, in its validity window), so a verifier that
    skipped that one check would accept it.
    """
    kid = keys.current_kid
    assert kid is not None, "keys.ensure() first"
    now = int(time.time())
    good = claims(issuer=issuer, audience=audience, now=now)

    def without(name: str) -> str:
        return keys.sign({k: v for k, v in good.items() if k != name})

    tokens = {
        "expired": keys.sign({**good, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}),
        "not_yet_valid": keys.sign({**good, "nbf": now + 3600, "exp": now + 7200}),
        "future_iat": keys.sign({**good, "iat": now + 3600, "exp": now + 7200}),
        "wrong_issuer": keys.sign({**good, "iss": f"{issuer}-evil"}),
        "wrong_audience": keys.sign({**good, "aud": f"{audience}-other"}),
        # A real key, a real signature, but not the one algorithm we accept.
        "wrong_algorithm": keys.sign(good, algorithm="RS512"),
        "alg_none": _unsigned(good, kid),
        "hs256_with_public_key": _hs256(good, kid, secret=keys.public_pem()),
        "unknown_kid": jwt.encode(
            good, _stranger_key(), algorithm="RS256", headers={"kid": "not-in-the-jwks"}
        ),
        "missing_kid": jwt.encode(good, keys.private_key(), algorithm="RS256"),
        **{f"missing_{name}": without(name) for name in ("exp", "iat", "nbf", "iss", "aud", "sub")},
        "invalid_subject": keys.sign({**good, "sub": "robert'); DROP TABLE projects;--"}),
        "malformed": "not-a-jwt",
        "bad_signature": _flip_signature_byte(keys.sign(good)),
    }
    assert tokens.keys() == EXPECTED_REASONS.keys()
    return tokens


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _unsigned(payload: dict[str, Any], kid: str) -> str:
    return f"{_segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_segment(payload)}."


def _hs256(payload: dict[str, Any], kid: str, *, secret: bytes) -> str:
    # PyJWT refuses to use a PEM public key as an HMAC secret, which is the point of the
    # attack: a verifier that took the algorithm from the token would accept this.
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_segment(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def _flip_signature_byte(token: str) -> str:
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01  # a decoded byte, not a base64 character (padding bits)
    return f"{head}.{payload}.{_b64url(bytes(raw))}"


@functools.cache
def _stranger_key() -> rsa.RSAPrivateKey:
    """A well-formed RSA key nobody's JWKS holds (generated once per test run)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class JwksServer:
    """Serves a JWKS body on ``http://127.0.0.1:<port>/jwks.json``; counts the requests.

    ``body`` and ``status`` may be changed while it runs; ``delay_seconds`` makes every
    response slow, so that concurrent refreshers pile up behind the first one.
    """

    def __init__(self, body: bytes, *, status: int = 200, delay_seconds: float = 0.0) -> None:
        self.body = body
        self.status = status
        self.delay_seconds = delay_seconds
        self._requests = 0
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The JWKS URL."""
        return f"http://127.0.0.1:{self._http.server_address[1]}/jwks.json"

    @property
    def requests(self) -> int:
        """How many GETs were answered so far."""
        with self._lock:
            return self._requests

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server._requests += 1
                if server.delay_seconds:
                    time.sleep(server.delay_seconds)  # a slow identity provider
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        """Serve for the duration of the block."""
        self._thread.start()
        try:
            yield self
        finally:
            self._http.shutdown()
            self._http.server_close()
            self._thread.join(5)

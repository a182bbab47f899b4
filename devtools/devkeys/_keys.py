"""Development signing keys: a local RSA key pair, its JWKS, and tokens minted with it.

Layout of the key directory (mode 0700)::

    private-<kid>.pem   PKCS#8 private key, mode 0600, one per generation
    jwks.json           the public keys of every generation still trusted
    current-kid         the kid that signs new tokens (the newest)

``rotate`` adds a key and keeps the old public keys in ``jwks.json``, so tokens signed
before the rotation keep verifying; ``retire`` removes an old one. Files are replaced
atomically so a server re-reading ``jwks.json`` never sees half of it, and
``current-kid`` is written last so it never names a key the JWKS lacks.

This is for ``make run``, the README and the tests. Production tokens come from a real
identity provider; nothing here is used to verify anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server.auth import Role

DEV_ISSUER = "agentic-dev"
"""The ``iss`` of minted tokens: the API server's default ``AGENTIC_AUTH_ISSUER``."""
DEV_AUDIENCE = "agentic-backend"
"""The ``aud`` of minted tokens: the API server's default ``AGENTIC_AUTH_AUDIENCE``."""
_KEY_BITS = 2048
_PUBLIC_EXPONENT = 65537


class DevKeys:
    """The development key directory ``directory`` (see the module docstring for its layout)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        # Loading an RSA private key costs ~30 ms of CPU (cryptography checks the key);
        # a kid is the key's thumbprint, so a cached key can never go stale.
        self._loaded: dict[str, rsa.RSAPrivateKey] = {}

    @property
    def jwks_path(self) -> Path:
        """The JWKS file a server verifies dev tokens against (``AGENTIC_AUTH_JWKS``)."""
        return self.directory / "jwks.json"

    @property
    def current_kid(self) -> str | None:
        """The kid that signs new tokens, or None when no key was generated yet."""
        try:
            kid = (self.directory / "current-kid").read_text().strip()
        except FileNotFoundError:
            return None
        return kid or None

    def has_key(self) -> bool:
        """Whether a current signing key and the JWKS exist."""
        kid = self.current_kid
        return kid is not None and self._private_path(kid).exists() and self.jwks_path.exists()

    def ensure(self) -> str:
        """Generate the first key pair unless one exists; return the current kid."""
        kid = self.current_kid
        if kid is not None and self.has_key():
            return kid
        return self.rotate()

    def rotate(self) -> str:
        """Generate a new signing key, publish it next to the old ones; return its kid."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        private = rsa.generate_private_key(public_exponent=_PUBLIC_EXPONENT, key_size=_KEY_BITS)
        jwk = public_jwk(private.public_key())
        kid = str(jwk["kid"])
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # O_EXCL: never overwrite a key; 0600 from creation, not chmod-ed afterwards.
        fd = os.open(self._private_path(kid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(pem)
        self._loaded[kid] = private
        keys = [k for k in self._jwks_keys() if k.get("kid") != kid]
        self._write_jwks([*keys, jwk])
        _write_atomically(self.directory / "current-kid", f"{kid}\n".encode())
        return kid

    def retire(self, kid: str) -> None:
        """Stop trusting an old key: drop it from the JWKS and delete its private key."""
        if kid == self.current_kid:
            raise ValueError("cannot retire the current signing key; rotate first")
        self._write_jwks([k for k in self._jwks_keys() if k.get("kid") != kid])
        self._private_path(kid).unlink(missing_ok=True)
        self._loaded.pop(kid, None)

    def private_key(self, kid: str | None = None) -> rsa.RSAPrivateKey:
        """The private key ``kid`` (default: the current one)."""
        kid = kid or self._require_current_kid()
        cached = self._loaded.get(kid)
        if cached is not None:
            return cached
        key = serialization.load_pem_private_key(self._private_path(kid).read_bytes(), None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError(f"{self._private_path(kid)} is not an RSA private key")
        self._loaded[kid] = key
        return key

    def public_pem(self, kid: str | None = None) -> bytes:
        """The current (or ``kid``) public key as SubjectPublicKeyInfo PEM."""
        return (
            self.private_key(kid)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        kid: str | None = None,
        algorithm: str = "RS256",
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign ``claims`` exactly as given (no defaults added) with key ``kid``."""
        kid = kid or self._require_current_kid()
        return jwt.encode(
            dict(claims),
            self.private_key(kid),
            algorithm=algorithm,
            headers={"kid": kid, **(headers or {})},
        )

    def mint(
        self,
        sub: str,
        roles: Iterable[Role | str],
        *,
        ttl_seconds: int = 3600,
        issuer: str = DEV_ISSUER,
        audience: str = DEV_AUDIENCE,
        now: float | None = None,
        extra_claims: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        session: bool = True,
    ) -> str:
        """A token for ``sub`` with ``roles``, valid from ``now`` for ``ttl_seconds``.

        It carries a fresh ``sid`` (a new session, as a sign-in at an identity provider
        starts one) unless ``session`` is False: a session-less service token, which the
        API server admits only for the subjects and roles on its allow-list
        (``AGENTIC_SESSIONLESS_SUBJECTS``/``_ROLES``). ``extra_claims`` may set ``sid``.
        """
        issued_at = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": sub,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + ttl_seconds,
            "roles": [str(role) for role in roles],
        }
        if session:
            claims["sid"] = str(uuid.uuid4())
        claims.update(extra_claims or {})
        return self.sign(claims, headers=headers)

    def _private_path(self, kid: str) -> Path:
        return self.directory / f"private-{kid}.pem"

    def _require_current_kid(self) -> str:
        kid = self.current_kid
        if kid is None:
            raise FileNotFoundError(
                f"no development key in {self.directory}; "
                f"run: python -m devtools.devkeys ensure --dir {self.directory}"
            )
        return kid

    def _jwks_keys(self) -> list[dict[str, Any]]:
        try:
            document = json.loads(self.jwks_path.read_bytes())
        except FileNotFoundError:
            return []
        keys = document.get("keys") if isinstance(document, dict) else None
        return [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []

    def _write_jwks(self, keys: list[dict[str, Any]]) -> None:
        body = json.dumps({"keys": keys}, indent=2) + "\n"
        _write_atomically(self.jwks_path, body.encode())


def public_jwk(key: rsa.RSAPublicKey) -> dict[str, str]:
    """``key`` as an RS256 signing JWK whose kid is its RFC 7638 thumbprint."""
    numbers = key.public_numbers()
    e, n = _b64url_uint(numbers.e), _b64url_uint(numbers.n)
    # RFC 7638: the required members only, in lexicographic order, no whitespace.
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"))
    kid = _b64url(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)

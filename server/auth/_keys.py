"""The public keys tokens are verified against: a JWKS document, indexed by ``kid``.

The source is a file path or an ``http(s)://`` URL. Keys rotate by publishing the new
key next to the old one, so during a rotation both verify. A token naming a ``kid`` we
do not hold triggers a re-read of the source, but at most one per
``min_refresh_interval_seconds`` across all callers: otherwise anyone could make us
hammer the identity provider by sending made-up key ids. A failed re-read keeps the
keys we have, because an identity provider that is briefly down must not log everyone
out.

Only keys that can verify RS256 signatures are kept. The algorithm is fixed by the
verifier, never taken from a token or from the JWKS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

log = logging.getLogger(__name__)

DEFAULT_MIN_REFRESH_INTERVAL_SECONDS = 30.0
DEFAULT_FETCH_TIMEOUT_SECONDS = 5.0
# A JWKS with a handful of 4096-bit keys is a few KiB; anything near 1 MiB is not a JWKS.
DEFAULT_MAX_JWKS_BYTES = 1024 * 1024
# Below 2048 bits RSA is breakable (NIST SP 800-131A); PyJWT would also warn on every call.
MIN_RSA_KEY_BITS = 2048
_CHUNK_BYTES = 64 * 1024


class JwksError(Exception):
    """The JWKS source could not be read or holds no usable RS256 signing key."""


class JwksKeySet:
    """RS256 public keys by ``kid``, re-read from their source when an unknown ``kid`` shows up.

    Build it with ``JwksKeySet.load``, which reads the source once and raises ``JwksError``
    when it is unusable, so that a misconfigured server refuses to start.
    """

    def __init__(
        self,
        source: str,
        keys: Mapping[str, RSAPublicKey],
        *,
        min_refresh_interval_seconds: float = DEFAULT_MIN_REFRESH_INTERVAL_SECONDS,
        fetch_timeout_seconds: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
        max_bytes: int = DEFAULT_MAX_JWKS_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._keys: dict[str, RSAPublicKey] = dict(keys)
        self._min_refresh_interval_seconds = min_refresh_interval_seconds
        self._fetch_timeout_seconds = fetch_timeout_seconds
        self._max_bytes = max_bytes
        self._clock = clock
        # None until the first refresh: a server that starts in the middle of a rotation
        # must be able to pick up the new key at once rather than after a full interval.
        self._last_refresh_at: float | None = None
        self._lock = asyncio.Lock()
        self._refresh_attempts = 0

    @classmethod
    def load(
        cls,
        source: str | Path,
        *,
        min_refresh_interval_seconds: float = DEFAULT_MIN_REFRESH_INTERVAL_SECONDS,
        fetch_timeout_seconds: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
        max_bytes: int = DEFAULT_MAX_JWKS_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> JwksKeySet:
        """Read the JWKS at ``source`` (path or http(s) URL); raise ``JwksError`` if unusable."""
        text = str(source)
        if "://" in text and not text.startswith(("http://", "https://")):
            raise JwksError(f"JWKS source {describe_source(text)}: only http(s) URLs or paths")
        if text.startswith("http://") and not _is_loopback_url(text):
            log.warning("JWKS source %s uses plain http; use https", describe_source(text))
        keys = read_jwks(text, timeout_seconds=fetch_timeout_seconds, max_bytes=max_bytes)
        return cls(
            text,
            keys,
            min_refresh_interval_seconds=min_refresh_interval_seconds,
            fetch_timeout_seconds=fetch_timeout_seconds,
            max_bytes=max_bytes,
            clock=clock,
        )

    @property
    def kids(self) -> frozenset[str]:
        """The key ids currently held."""
        return frozenset(self._keys)

    @property
    def refresh_attempts(self) -> int:
        """How many times the source was re-read after start-up (successful or not)."""
        return self._refresh_attempts

    async def key_for(self, kid: str) -> RSAPublicKey | None:
        """The key with id ``kid``, re-reading the source (rate-limited) when it is unknown."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        await self.refresh()
        return self._keys.get(kid)

    async def refresh(self) -> bool:
        """Re-read the source unless that happened within the interval; True if keys were replaced.

        Concurrent callers queue on one lock, so a burst of tokens with unknown key ids
        causes one read, not one per token. A failed read keeps the current keys.
        """
        async with self._lock:
            now = self._clock()
            if (
                self._last_refresh_at is not None
                and now - self._last_refresh_at < self._min_refresh_interval_seconds
            ):
                return False
            self._last_refresh_at = now
            self._refresh_attempts += 1
            try:
                # Off the event loop: a slow identity provider must not stall other RPCs.
                keys = await asyncio.to_thread(
                    read_jwks,
                    self._source,
                    timeout_seconds=self._fetch_timeout_seconds,
                    max_bytes=self._max_bytes,
                )
            except JwksError as exc:
                log.warning("JWKS refresh failed, keeping %d cached keys: %s", len(self._keys), exc)
                return False
            added = keys.keys() - self._keys.keys()
            removed = self._keys.keys() - keys.keys()
            self._keys = keys
            log.info(
                "JWKS refreshed: %d keys (%d new, %d retired)", len(keys), len(added), len(removed)
            )
            return True


def read_jwks(source: str, *, timeout_seconds: float, max_bytes: int) -> dict[str, RSAPublicKey]:
    """Read and parse the JWKS at ``source``: its RS256 signing keys by ``kid``."""
    where = describe_source(source)
    try:
        if source.startswith(("http://", "https://")):
            raw = _read_url(source, timeout_seconds=timeout_seconds, max_bytes=max_bytes)
        else:
            with open(source, "rb") as stream:
                raw = stream.read(max_bytes + 1)
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors too
        raise JwksError(f"cannot read JWKS from {where}: {type(exc).__name__}: {exc}") from None
    if len(raw) > max_bytes:
        raise JwksError(f"JWKS at {where} is larger than {max_bytes} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise JwksError(f"JWKS at {where} is not valid JSON") from None
    keys = parse_jwks(document, where=where)
    if not keys:
        raise JwksError(f"JWKS at {where} holds no usable RS256 signing key with a kid")
    return keys


def parse_jwks(document: object, *, where: str = "JWKS") -> dict[str, RSAPublicKey]:
    """The usable RS256 signing keys of a parsed JWKS document, by ``kid``.

    Keys for other algorithms or uses are skipped silently (a JWKS may legitimately hold
    them); keys we would have used but cannot (no kid, bad numbers, too short) are
    skipped with a warning, since they usually mean a misconfiguration.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError(f"JWKS at {where} is not an object with a 'keys' list")
    keys: dict[str, RSAPublicKey] = {}
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict) or not _is_rs256_signing_key(jwk):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            log.warning("JWKS at %s: key #%d has no kid; ignored", where, index)
            continue
        if kid in keys:
            # Two keys under one id cannot be told apart by a token; trust the first.
            log.warning("JWKS at %s: duplicate kid at key #%d; ignored", where, index)
            continue
        key = _rsa_public_key(jwk)
        if key is None:
            log.warning("JWKS at %s: key #%d has invalid RSA parameters; ignored", where, index)
            continue
        if key.key_size < MIN_RSA_KEY_BITS:
            log.warning(
                "JWKS at %s: key #%d is %d bits (< %d); ignored",
                where,
                index,
                key.key_size,
                MIN_RSA_KEY_BITS,
            )
            continue
        keys[kid] = key
    return keys


def describe_source(source: str) -> str:
    """``source`` fit for logs: a URL loses credentials, query and fragment."""
    if not source.startswith(("http://", "https://")):
        return source
    parts = urllib.parse.urlsplit(source)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _is_rs256_signing_key(jwk: dict[str, Any]) -> bool:
    ops = jwk.get("key_ops")
    return (
        jwk.get("kty") == "RSA"
        and jwk.get("use", "sig") == "sig"
        and jwk.get("alg", "RS256") == "RS256"
        and (ops is None or (isinstance(ops, list) and "verify" in ops))
    )


def _rsa_public_key(jwk: dict[str, Any]) -> RSAPublicKey | None:
    # Built from n and e only: any private members a careless JWKS carries are ignored.
    n, e = _b64url_uint(jwk.get("n")), _b64url_uint(jwk.get("e"))
    if n is None or e is None:
        return None
    try:
        return RSAPublicNumbers(e, n).public_key()
    except ValueError:
        return None


def _b64url_uint(value: object) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if raw else None


def _read_url(url: str, *, timeout_seconds: float, max_bytes: int) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    # urlopen's timeout bounds each socket operation; the deadline bounds the whole body,
    # so a server dribbling one byte at a time cannot hold a thread for long.
    deadline = time.monotonic() + timeout_seconds
    chunks: list[bytes] = []
    size = 0
    with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
        while size <= max_bytes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"body not complete within {timeout_seconds}s")
            # read1: at most one socket read, so the deadline is checked between reads.
            chunk = response.read1(_CHUNK_BYTES)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)


def _is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")

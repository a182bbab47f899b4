"""Token verification with real RSA keys: every bad token is refused, good ones become
principals, keys rotate, and unknown key ids cannot make us hammer the JWKS source."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
import subprocess
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from core.rpc import Unauthenticated
from devtools.devkeys import DEV_AUDIENCE, DEV_ISSUER, DevKeys, public_jwk
from server.auth import (
    JwksError,
    JwksKeySet,
    Principal,
    Role,
    TokenVerifier,
)
from server.auth._keys import describe_source
from tests._auth import EXPECTED_REASONS, JwksServer, bad_tokens, bearer, claims
from tests._processes import run_module

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one scenario on a fresh event loop (a key set's lock belongs to one loop)."""
    return asyncio.run(coroutine)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def dev_keys(tmp_path_factory: pytest.TempPathFactory) -> DevKeys:
    """One dev key pair for the tests that do not change keys."""
    keys = DevKeys(tmp_path_factory.mktemp("auth"))
    keys.ensure()
    return keys


def verifier_for(keys: JwksKeySet, *, leeway_seconds: float = 30) -> TokenVerifier:
    """A verifier for dev tokens (dev issuer and audience) backed by ``keys``."""
    return TokenVerifier(
        keys, issuer=DEV_ISSUER, audience=DEV_AUDIENCE, leeway_seconds=leeway_seconds
    )


def refused(verifier: TokenVerifier, authorization: str | None) -> Unauthenticated:
    """The Unauthenticated that ``authorization`` must raise."""
    with pytest.raises(Unauthenticated) as caught:
        run(verifier.authenticate(authorization))
    return caught.value


# --- refusals ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad(dev_keys: DevKeys) -> dict[str, str]:
    """The bad tokens of ``dev_keys``, made once (each is valid for an hour but for its defect)."""
    return bad_tokens(dev_keys, issuer=DEV_ISSUER, audience=DEV_AUDIENCE)


@pytest.mark.parametrize("case", sorted(EXPECTED_REASONS))
def test_bad_token_is_refused_without_echoing_it(
    case: str, dev_keys: DevKeys, bad: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    token = bad[case]
    verifier = verifier_for(JwksKeySet.load(dev_keys.jwks_path))
    with caplog.at_level(logging.DEBUG, logger="server.auth"):
        error = refused(verifier, bearer(token))
    assert error.reason == EXPECTED_REASONS[case], error.message
    # Neither the token nor any of its segments (header, claims, signature) is echoed,
    # and PyJWT's own exception (whose text can quote input) is not chained.
    for part in [token, *token.split(".")]:
        if len(part) >= 8:
            assert part not in error.message
            assert part not in caplog.text
    assert "mallory" not in error.message
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.mark.parametrize(
    "authorization",
    [None, "", "   ", "Bearer", "Bearer    ", "Basic YWxpY2U6c2VjcmV0", "Token abc.def.ghi"],
)
def test_missing_or_non_bearer_authorization_is_refused(
    authorization: str | None, dev_keys: DevKeys
) -> None:
    error = refused(verifier_for(JwksKeySet.load(dev_keys.jwks_path)), authorization)
    assert error.reason == "TOKEN_MISSING"


def test_oversized_token_is_refused_before_parsing(dev_keys: DevKeys) -> None:
    huge = dev_keys.mint("alice", [], extra_claims={"pad": "x" * 10_000})
    error = refused(verifier_for(JwksKeySet.load(dev_keys.jwks_path)), bearer(huge))
    assert error.reason == "TOKEN_INVALID"


@pytest.mark.parametrize("subject", ["", "a" * 129, "alice smith", "alice\n", "ålice"])
def test_unfit_subject_is_refused(subject: str, dev_keys: DevKeys) -> None:
    token = dev_keys.sign(claims(issuer=DEV_ISSUER, audience=DEV_AUDIENCE, sub=subject))
    error = refused(verifier_for(JwksKeySet.load(dev_keys.jwks_path)), bearer(token))
    assert error.reason == "TOKEN_INVALID"


def test_non_string_subject_is_refused(dev_keys: DevKeys) -> None:
    token = dev_keys.sign({**claims(issuer=DEV_ISSUER, audience=DEV_AUDIENCE), "sub": 42})
    error = refused(verifier_for(JwksKeySet.load(dev_keys.jwks_path)), bearer(token))
    assert error.reason == "TOKEN_INVALID"


# --- good tokens ------------------------------------------------------------------------


def test_good_token_gives_principal_with_known_roles_only(dev_keys: DevKeys) -> None:
    token = dev_keys.mint(
        "alice@example.com",
        [Role.PROJECT_MANAGER, Role.SUPPORT_ENGINEER, "superuser", "Administrator"],
    )
    verifier = verifier_for(JwksKeySet.load(dev_keys.jwks_path))
    principal = run(verifier.authenticate(bearer(token)))
    assert principal == Principal(
        subject="alice@example.com",
        roles=frozenset({Role.PROJECT_MANAGER, Role.SUPPORT_ENGINEER}),
    )
    assert not principal.is_administrator
    # The scheme is case-insensitive (RFC 9110), surrounding blanks are tolerated.
    assert run(verifier.authenticate(f"  bEaReR   {token} ")) == principal


def test_a_roles_list_of_strings_keeps_the_known_roles(dev_keys: DevKeys) -> None:
    token = dev_keys.sign(
        {**claims(issuer=DEV_ISSUER, audience=DEV_AUDIENCE), "roles": ["administrator", "x"]}
    )
    principal = run(verifier_for(JwksKeySet.load(dev_keys.jwks_path)).authenticate(bearer(token)))
    assert principal.roles == {Role.ADMINISTRATOR}
    assert principal.is_administrator


@pytest.mark.parametrize(
    "roles_claim",
    [
        "administrator",  # a string, not a list: a malformed token, not "no roles"
        {"administrator": True},
        [["administrator"]],
        [1, None, "technical_lead"],
        None,
        7,
    ],
)
def test_a_malformed_roles_claim_is_unauthenticated(roles_claim: Any, dev_keys: DevKeys) -> None:
    token = dev_keys.sign(
        {**claims(issuer=DEV_ISSUER, audience=DEV_AUDIENCE), "roles": roles_claim}
    )
    error = refused(verifier_for(JwksKeySet.load(dev_keys.jwks_path)), bearer(token))
    assert error.reason == "TOKEN_INVALID"


def test_missing_roles_claim_means_no_roles(dev_keys: DevKeys) -> None:
    token_claims = claims(issuer=DEV_ISSUER, audience=DEV_AUDIENCE, sub="bob")
    del token_claims["roles"]
    verifier = verifier_for(JwksKeySet.load(dev_keys.jwks_path))
    assert run(verifier.authenticate(bearer(dev_keys.sign(token_claims)))) == Principal(
        subject="bob", roles=frozenset()
    )


def test_audience_list_containing_ours_is_accepted(dev_keys: DevKeys) -> None:
    token = dev_keys.mint("alice", [], extra_claims={"aud": ["other-api", DEV_AUDIENCE]})
    principal = run(verifier_for(JwksKeySet.load(dev_keys.jwks_path)).authenticate(bearer(token)))
    assert principal.subject == "alice"


@pytest.mark.parametrize(("expired_seconds_ago", "accepted"), [(10, True), (60, False)])
def test_leeway_on_expiry(expired_seconds_ago: int, accepted: bool, dev_keys: DevKeys) -> None:
    token = dev_keys.mint(
        "alice", [], ttl_seconds=3600, now=time.time() - 3600 - expired_seconds_ago
    )
    verifier = verifier_for(JwksKeySet.load(dev_keys.jwks_path), leeway_seconds=30)
    if accepted:
        assert run(verifier.authenticate(bearer(token))).subject == "alice"
    else:
        assert refused(verifier, bearer(token)).reason == "TOKEN_EXPIRED"


@pytest.mark.parametrize(("starts_in_seconds", "accepted"), [(10, True), (60, False)])
def test_leeway_on_not_before(starts_in_seconds: int, accepted: bool, dev_keys: DevKeys) -> None:
    token = dev_keys.mint("alice", [], now=time.time() + starts_in_seconds)  # iat = nbf
    verifier = verifier_for(JwksKeySet.load(dev_keys.jwks_path), leeway_seconds=30)
    if accepted:
        assert run(verifier.authenticate(bearer(token))).subject == "alice"
    else:
        assert refused(verifier, bearer(token)).reason == "TOKEN_NOT_YET_VALID"


# --- keys: rotation, refresh, failures --------------------------------------------------


def test_rotation_old_and_new_keys_verify_until_the_old_one_is_retired(tmp_path: Path) -> None:
    keys = DevKeys(tmp_path)
    old_kid = keys.ensure()
    old_token = keys.mint("alice", [Role.TECHNICAL_LEAD])
    clock = FakeClock()
    key_set = JwksKeySet.load(keys.jwks_path, min_refresh_interval_seconds=30, clock=clock)
    verifier = verifier_for(key_set)

    async def scenario() -> None:
        assert (await verifier.authenticate(bearer(old_token))).subject == "alice"
        new_kid = keys.rotate()
        new_token = keys.mint("bob", [Role.ADMINISTRATOR])
        # The new kid is unknown: one refresh picks it up; the old key is still published.
        assert (await verifier.authenticate(bearer(new_token))).is_administrator
        assert key_set.kids == {old_kid, new_kid}
        assert (await verifier.authenticate(bearer(old_token))).subject == "alice"
        assert key_set.refresh_attempts == 1

        keys.retire(old_kid)
        clock.now += 31
        assert await key_set.refresh()
        assert key_set.kids == {new_kid}
        with pytest.raises(Unauthenticated) as caught:
            await verifier.authenticate(bearer(old_token))
        assert caught.value.reason == "UNKNOWN_KEY"
        assert (await verifier.authenticate(bearer(new_token))).subject == "bob"

    run(scenario())


def _jwks_body(*keys: DevKeys) -> bytes:
    return json.dumps(
        {"keys": [json.loads(k.jwks_path.read_text())["keys"][-1] for k in keys]}
    ).encode()


def test_concurrent_unknown_kids_cause_exactly_one_refresh(tmp_path: Path) -> None:
    first, second = DevKeys(tmp_path / "first"), DevKeys(tmp_path / "second")
    first.ensure()
    second.ensure()
    strangers = bad_tokens(first, issuer=DEV_ISSUER, audience=DEV_AUDIENCE)
    server = JwksServer(_jwks_body(first), delay_seconds=0.2)
    clock = FakeClock()
    with server.running():
        key_set = JwksKeySet.load(server.url, clock=clock)
        assert server.requests == 1
        verifier = verifier_for(key_set)
        # The identity provider publishes a second key; 50 callers present tokens of it
        # at once, while the (slow) refresh is in flight.
        server.body = _jwks_body(first, second)
        tokens = [second.mint(f"user{i}", [Role.SUPPORT_ENGINEER]) for i in range(50)]

        async def burst() -> list[Principal]:
            return await asyncio.gather(*(verifier.authenticate(bearer(t)) for t in tokens))

        async def unknown_burst() -> list[BaseException | Principal]:
            calls = (verifier.authenticate(bearer(strangers["unknown_kid"])) for _ in range(50))
            return await asyncio.gather(*calls, return_exceptions=True)

        async def scenario() -> None:
            principals = await burst()
            assert [p.subject for p in principals] == [f"user{i}" for i in range(50)]
            assert server.requests == 2
            assert key_set.refresh_attempts == 1

            # 50 more with a kid nobody publishes, within the interval: no request at all.
            outcomes = await unknown_burst()
            assert all(
                isinstance(o, Unauthenticated) and o.reason == "UNKNOWN_KEY" for o in outcomes
            )
            assert server.requests == 2

            # After the interval, one more (and only one) refresh is allowed.
            clock.now += 31
            outcomes = await unknown_burst()
            assert all(isinstance(o, Unauthenticated) for o in outcomes)
            assert server.requests == 3
            assert key_set.refresh_attempts == 2

        run(scenario())


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, b"oops"), (200, b"{not json"), (200, b'{"keys": []}'), (200, b"x" * 2_000_000)],
    ids=["http-500", "bad-json", "no-keys", "too-big"],
)
def test_failed_http_refresh_keeps_cached_keys(
    status: int,
    body: bytes,
    dev_keys: DevKeys,
    bad: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = dev_keys.mint("alice", [Role.PROJECT_MANAGER])
    stranger = bad["unknown_kid"]
    server = JwksServer(_jwks_body(dev_keys))
    with server.running():
        key_set = JwksKeySet.load(server.url + "?access_token=s3cret")
        verifier = verifier_for(key_set)
        server.status, server.body = status, body

        async def scenario() -> None:
            with pytest.raises(Unauthenticated):
                await verifier.authenticate(bearer(stranger))
            assert key_set.refresh_attempts == 1
            assert (await verifier.authenticate(bearer(good))).subject == "alice"

        with caplog.at_level(logging.WARNING, logger="server.auth"):
            run(scenario())
    assert server.requests == 2
    assert "JWKS refresh failed, keeping 1 cached keys" in caplog.text
    assert "s3cret" not in caplog.text  # the URL's query is not logged


def test_failed_file_refresh_keeps_cached_keys(tmp_path: Path) -> None:
    keys = DevKeys(tmp_path)
    keys.ensure()
    good = keys.mint("alice", [])
    stranger = bad_tokens(keys, issuer=DEV_ISSUER, audience=DEV_AUDIENCE)["unknown_kid"]
    key_set = JwksKeySet.load(keys.jwks_path)
    verifier = verifier_for(key_set)
    keys.jwks_path.write_text('{"keys": [')

    async def scenario() -> None:
        with pytest.raises(Unauthenticated):
            await verifier.authenticate(bearer(stranger))
        assert key_set.refresh_attempts == 1
        assert (await verifier.authenticate(bearer(good))).subject == "alice"

    run(scenario())


def test_refresh_does_not_block_the_event_loop(dev_keys: DevKeys, bad: dict[str, str]) -> None:
    stranger = bad["unknown_kid"]
    server = JwksServer(_jwks_body(dev_keys), delay_seconds=0.5)
    with server.running():
        key_set = JwksKeySet.load(server.url)
        verifier = verifier_for(key_set)
        ticks = 0

        async def ticker(stop: asyncio.Event) -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(ticker(stop))
            with pytest.raises(Unauthenticated):
                await verifier.authenticate(bearer(stranger))
            stop.set()
            await task

        run(scenario())
    # A blocking fetch would have frozen the ticker for the whole 0.5 s.
    assert ticks >= 10, f"event loop ran only {ticks} ticks during a 0.5 s refresh"


def _write_jwks(path: Path, keys: list[object]) -> Path:
    path.write_text(json.dumps({"keys": keys}))
    return path


def test_only_rs256_signing_keys_with_a_kid_are_kept(
    tmp_path: Path, dev_keys: DevKeys, caplog: pytest.LogCaptureFixture
) -> None:
    good = public_jwk(dev_keys.private_key().public_key())
    weak = public_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key())
    jwks: list[object] = [
        {**good, "kid": "enc", "use": "enc"},
        {**good, "kid": "rs512", "alg": "RS512"},
        {**good, "kid": "ops", "key_ops": ["encrypt"]},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        {k: v for k, v in good.items() if k != "kid"},
        {**good, "kid": "broken", "n": "!!!"},
        {**weak, "kid": "weak"},
        "not an object",
        {"kty": "RSA", "kid": "bare", "n": good["n"], "e": good["e"]},  # no use, no alg: fine
        {**good, "kid": "good"},
        {**good, "kid": "good", "n": weak["n"]},  # duplicate: the first one wins
    ]
    with caplog.at_level(logging.WARNING, logger="server.auth"):
        key_set = JwksKeySet.load(_write_jwks(tmp_path / "jwks.json", jwks))
    assert key_set.kids == {"bare", "good"}
    assert "key #4 has no kid" in caplog.text
    assert "key #5 has invalid RSA parameters" in caplog.text
    assert "key #6 is 1024 bits" in caplog.text
    assert "duplicate kid at key #10" in caplog.text


@pytest.mark.parametrize(
    "content",
    ["", "{not json", "[]", '{"keys": {}}', '{"keys": []}', '{"keys": [{"kty": "EC"}]}'],
)
def test_unusable_jwks_file_fails_loudly_at_start(content: str, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(content)
    with pytest.raises(JwksError, match=re.escape(str(path))):
        JwksKeySet.load(path)


def test_unusable_jwks_source_fails_loudly_at_start(tmp_path: Path) -> None:
    with pytest.raises(JwksError, match="cannot read JWKS"):
        JwksKeySet.load(tmp_path / "missing.json")
    with pytest.raises(JwksError, match="only http"):
        JwksKeySet.load("ftp://idp.example/jwks.json")
    server = JwksServer(b"{}", status=404)
    with server.running(), pytest.raises(JwksError, match="HTTPError"):
        JwksKeySet.load(server.url, fetch_timeout_seconds=2)
    closed = server.url  # the server is gone: connection refused
    with pytest.raises(JwksError, match="cannot read JWKS"):
        JwksKeySet.load(closed, fetch_timeout_seconds=2)


def test_source_descriptions_drop_credentials() -> None:
    assert describe_source("https://user:pw@idp.example:8443/jwks?key=s#f") == (
        "https://idp.example:8443/jwks"
    )
    assert describe_source("/etc/agentic/jwks.json") == "/etc/agentic/jwks.json"


# --- dev tooling ------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("devtools.devkeys", *args, timeout=60)


def test_cli_keygen_rotate_and_mint_give_tokens_that_verify(tmp_path: Path) -> None:
    directory = tmp_path / "dev-auth"
    first = _cli("ensure", "--dir", str(directory))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(directory / "jwks.json")
    keys = DevKeys(directory)
    old_kid = keys.current_kid
    assert old_kid is not None
    assert stat.S_IMODE(os.stat(directory / f"private-{old_kid}.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700

    assert _cli("ensure", "--dir", str(directory)).returncode == 0
    assert keys.current_kid == old_kid  # ensure never replaces a key
    refused_keygen = _cli("keygen", "--dir", str(directory))
    assert refused_keygen.returncode == 1
    assert "--rotate" in refused_keygen.stderr

    old_token = _cli("mint", "--dir", str(directory), "--sub", "alice", "--role", "administrator")
    assert old_token.returncode == 0, old_token.stderr
    rotated = _cli("keygen", "--dir", str(directory), "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert keys.current_kid not in (None, old_kid)

    minted = _cli(
        "mint", "--dir", str(directory), "--sub", "carol",
        "--role", "project_manager", "--role", "technical_lead", "--ttl-seconds", "120",
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert token.count(".") == 2
    assert "\n" not in token

    verifier = verifier_for(JwksKeySet.load(keys.jwks_path))

    async def scenario() -> None:
        principal = await verifier.authenticate(bearer(token))
        assert principal == Principal(
            subject="carol", roles=frozenset({Role.PROJECT_MANAGER, Role.TECHNICAL_LEAD})
        )
        old = await verifier.authenticate(bearer(old_token.stdout.strip()))
        assert old.is_administrator  # the old public key is still published

    run(scenario())


def test_cli_rejects_unknown_roles_and_missing_keys(tmp_path: Path) -> None:
    missing = _cli("mint", "--dir", str(tmp_path / "none"), "--sub", "alice")
    assert missing.returncode == 1
    assert "python -m devtools.devkeys ensure" in missing.stderr
    assert missing.stdout == ""
    bad_role = _cli("mint", "--dir", str(tmp_path), "--sub", "a", "--role", "superuser")
    assert bad_role.returncode == 2
    assert "invalid choice" in bad_role.stderr


def test_retire_refuses_the_current_key(tmp_path: Path) -> None:
    keys = DevKeys(tmp_path)
    kid = keys.ensure()
    with pytest.raises(ValueError, match="current signing key"):
        keys.retire(kid)

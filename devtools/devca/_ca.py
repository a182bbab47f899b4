"""A local development CA and the leaf certificates of our processes, signed by it.

For laptops and tests only: the CA key sits next to the certificates, unprotected by a
passphrase. Production certificates come from a real CA through the same *_FILE
settings. Files in the directory (``ca.pem`` is the trust anchor of both sides)::

    ca.pem / ca-key.pem               the development CA
    server.pem / server-key.pem       API server          serverAuth  localhost, 127.0.0.1, ::1
    sidecar.pem / sidecar-key.pem     cache sidecar       serverAuth  localhost, 127.0.0.1, ::1
    client.pem / client-key.pem       API server's        clientAuth
                                      identity towards the sidecar (mTLS)

Existing files are kept, so re-running never breaks a running setup; a missing or
half-present pair is regenerated, and a new CA re-issues every leaf (old leaves would
no longer chain to it).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DevCa", "ensure_dev_ca"]

StrPath = str | os.PathLike[str]

# 825 days: the longest leaf validity Apple platforms accept for TLS server
# certificates; the CA outlives many leaf re-issues.
_LEAF_VALIDITY = datetime.timedelta(days=825)
_CA_VALIDITY = datetime.timedelta(days=3650)
# Backdated a little so a peer whose clock runs slightly behind accepts a fresh cert.
_CLOCK_SKEW = datetime.timedelta(minutes=5)
_ORGANIZATION = "agentic-backend development"
_SERVER_NAMES: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
)


@dataclass(frozen=True)
class DevCa:
    """Paths of a development CA directory's files, and which of them this run wrote."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    sidecar_cert: Path
    sidecar_key: Path
    client_cert: Path
    client_key: Path
    written: tuple[Path, ...]
    """Files created or replaced by the call that returned this (empty: all kept)."""


@dataclass(frozen=True)
class _Leaf:
    name: str
    common_name: str
    usage: x509.ObjectIdentifier
    san: tuple[x509.GeneralName, ...]


_LEAVES = (
    _Leaf("server", "agentic API server", ExtendedKeyUsageOID.SERVER_AUTH, _SERVER_NAMES),
    _Leaf("sidecar", "agentic cache sidecar", ExtendedKeyUsageOID.SERVER_AUTH, _SERVER_NAMES),
    _Leaf("client", "agentic API server (cache client)", ExtendedKeyUsageOID.CLIENT_AUTH, ()),
)


def ensure_dev_ca(directory: StrPath, *, force: bool = False) -> DevCa:
    """Create the development CA and leaf certificates in ``directory`` where missing.

    Keeps existing files unless ``force`` (then everything is re-issued). Key files
    are written mode 0600, the directory is created mode 0700. Returns the paths.
    """
    root = Path(directory)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []
    ca_cert_path, ca_key_path = _pair(root, "ca")
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
    if force or not (ca_cert_path.exists() and ca_key_path.exists()):
        ca_key = _new_key()
        ca = (_ca_certificate(ca_key), ca_key)
        written += _write_pair(ca_cert_path, ca[0], ca_key_path, ca_key)
    ca_is_new = ca is not None
    for leaf in _LEAVES:
        cert_path, key_path = _pair(root, leaf.name)
        if not ca_is_new and cert_path.exists() and key_path.exists():
            continue
        if ca is None:
            # Loaded only when needed: a directory whose leaves all exist needs no CA key.
            ca = _load_ca(ca_cert_path, ca_key_path)
        key = _new_key()
        written += _write_pair(cert_path, _leaf_certificate(leaf, key, *ca), key_path, key)
    return DevCa(
        directory=root,
        ca_cert=ca_cert_path,
        ca_key=ca_key_path,
        server_cert=_pair(root, "server")[0],
        server_key=_pair(root, "server")[1],
        sidecar_cert=_pair(root, "sidecar")[0],
        sidecar_key=_pair(root, "sidecar")[1],
        client_cert=_pair(root, "client")[0],
        client_key=_pair(root, "client")[1],
        written=tuple(written),
    )


def _pair(root: Path, name: str) -> tuple[Path, Path]:
    return root / f"{name}.pem", root / f"{name}-key.pem"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} is not an EC private key; re-run with --force")
    return cert, key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = _name("agentic-backend development CA")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    leaf: _Leaf,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(leaf.common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([leaf.usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if leaf.san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(leaf.san)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _write_pair(
    cert_path: Path, cert: x509.Certificate, key_path: Path, key: ec.EllipticCurvePrivateKey
) -> list[Path]:
    # Key first: a certificate on disk always has its key next to it.
    _write(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return [key_path, cert_path]


def _write(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    # The mode is set at creation (and again explicitly, past the umask): a key is
    # never readable by others, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, mode)
        file.write(data)
    os.replace(tmp, path)  # readers never see a half-written file

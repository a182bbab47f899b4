"""gRPC credentials from PEM files: TLS for servers, optional client certificates (mTLS).

Files are read and checked once, when the credentials are built at start-up, so a bad
path or a certificate that does not match its key stops the process with a message
naming the file instead of failing every handshake later with an opaque TLS error.
Messages never quote file contents: a key file passed by mistake must not end up in
a log.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = ["StrPath", "TlsConfigError", "channel_credentials", "server_credentials"]

StrPath = str | os.PathLike[str]
"""A file name as the callers hold it (configuration strings or Paths)."""


class TlsConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file."""


def server_credentials(
    cert_file: StrPath, key_file: StrPath, client_ca_file: StrPath | None = None
) -> grpc.ServerCredentials:
    """TLS credentials of a server presenting ``cert_file`` (PEM chain) and ``key_file``.

    With ``client_ca_file`` the server requires every client to present a certificate
    issued by one of those CAs (mTLS); a client without one fails the handshake, so
    no RPC of it ever reaches a servicer. Raises TlsConfigError naming a bad file.
    """
    cert, key = _key_pair(cert_file, key_file)
    client_ca = _certificates(client_ca_file, "CA certificate") if client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_credentials(
    ca_file: StrPath, cert_file: StrPath | None = None, key_file: StrPath | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials of a client trusting the CAs in ``ca_file``.

    ``cert_file`` and ``key_file`` (both or neither) are the client's own identity,
    presented to servers that require mTLS. Raises TlsConfigError naming a bad file.
    """
    if (cert_file is None) != (key_file is None):
        raise TlsConfigError("a client certificate needs its key file and vice versa")
    ca = _certificates(ca_file, "CA certificate")
    if cert_file is None or key_file is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    cert, key = _key_pair(cert_file, key_file)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def configured_channel_credentials(
    ca_file: str, cert_file: str = "", key_file: str = ""
) -> grpc.ChannelCredentials | None:
    """``channel_credentials`` as configuration spells them: empty ``ca_file`` means a
    plaintext channel (None); empty cert and key mean no client identity."""
    if not ca_file:
        return None
    return channel_credentials(ca_file, cert_file or None, key_file or None)


def _read(path: StrPath, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        # strerror only: the OSError's own str() repeats the path, and we already name it.
        raise TlsConfigError(f"cannot read {what} file {os.fspath(path)}: {exc.strerror}") from None


def _certificates(path: StrPath, what: str) -> bytes:
    data = _read(path, what)
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsConfigError(f"{what} file {os.fspath(path)} holds no PEM certificate") from None
    return data


def _key_pair(cert_file: StrPath, key_file: StrPath) -> tuple[bytes, bytes]:
    cert = _certificates(cert_file, "certificate")
    key = _read(key_file, "private key")
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        # TypeError: an encrypted key; gRPC cannot ask for a passphrase either.
        raise TlsConfigError(
            f"private key file {os.fspath(key_file)} holds no unencrypted PEM private key"
        ) from None
    leaf = x509.load_pem_x509_certificates(cert)[0]
    if leaf.public_key() != private_key.public_key():
        raise TlsConfigError(
            f"certificate file {os.fspath(cert_file)} does not match "
            f"private key file {os.fspath(key_file)}"
        )
    return cert, key

"""Transport security of our gRPC processes: credentials from PEM files, and a dev CA.

The API server and the cache sidecar build their TLS (and mTLS) credentials with
:func:`server_credentials` and :func:`channel_credentials`; ``python -m server.tls devca``
(``make dev-ca``) creates a local development CA with certificates for both.
"""

from core.tls._credentials import TlsConfigError, channel_credentials, server_credentials
from server.tls._devca import DevCa, ensure_dev_ca

__all__ = [
    "DevCa",
    "TlsConfigError",
    "channel_credentials",
    "ensure_dev_ca",
    "server_credentials",
]

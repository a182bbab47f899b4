"""Transport security of our gRPC processes: TLS and mTLS credentials from PEM files."""

from core.tls._credentials import (
    TlsConfigError,
    channel_credentials,
    configured_channel_credentials,
    server_credentials,
)

__all__ = [
    "TlsConfigError",
    "channel_credentials",
    "configured_channel_credentials",
    "server_credentials",
]

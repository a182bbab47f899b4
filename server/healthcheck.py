"""``python -m server.healthcheck ADDRESS [SERVICE] [--ca F [--cert F --key F]]``: exit 0
when the service is SERVING.

Used by container healthchecks and by scripts; works for any of our gRPC processes, over
plaintext or, with ``--ca``, over TLS (``--cert``/``--key`` for a server requiring mTLS).
ADDRESS is any gRPC target: ``HOST:PORT``, or ``unix:PATH`` for the cache sidecar's
socket (run it as the sidecar's user: the socket's directory admits no one else).
Health needs no token.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.tls import TlsConfigError, channel_credentials


def check(
    address: str,
    service: str = "",
    timeout_seconds: float = 3.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> bool:
    """True when the health service at ``address`` reports ``service`` SERVING."""
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m server.healthcheck")
    parser.add_argument("address", help="HOST:PORT or unix:PATH")
    parser.add_argument("service", nargs="?", default="", help="service name ('' = server)")
    parser.add_argument("--ca", help="CA certificate (PEM): talk TLS, trusting this CA")
    parser.add_argument("--cert", help="client certificate (PEM) for servers requiring mTLS")
    parser.add_argument("--key", help="key of the client certificate")
    args = parser.parse_args()
    credentials = None
    if args.ca:
        try:
            credentials = channel_credentials(args.ca, args.cert, args.key)
        except TlsConfigError as exc:
            sys.exit(f"healthcheck: {exc}")
    elif args.cert or args.key:
        parser.error("--cert and --key need --ca")
    sys.exit(0 if check(args.address, args.service, credentials=credentials) else 1)


if __name__ == "__main__":
    main()

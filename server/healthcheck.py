"""``python -m server.healthcheck ADDRESS [SERVICE]``: exit 0 when the service is SERVING.

Used by container healthchecks and by scripts; works for any of our gRPC processes.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout_seconds: float = 3.0) -> bool:
    """True when the health service at ``address`` reports ``service`` SERVING."""
    with grpc.insecure_channel(address) as channel:
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
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m server.healthcheck HOST:PORT [SERVICE]")
    address, service = sys.argv[1], (sys.argv[2] if len(sys.argv) == 3 else "")
    sys.exit(0 if check(address, service) else 1)


if __name__ == "__main__":
    main()

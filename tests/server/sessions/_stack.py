"""API servers with session settings for tests: short idle timeouts, shared database."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc

from tests._identity import bearer
from tests._processes import Service, start_service
from tests._status import rich_status
from tests._support import REPO

TIMEOUT = 5.0
SHIPPED_POLICY = REPO / "cache_sidecar" / "namespaces.toml"


def policy_with_session_ttl(directory: Path, ttl_seconds: int) -> Path:
    """The shipped policy with the sessions namespace's ttl_seconds (the idle timeout, which
    the sidecar owns) set to ``ttl_seconds``."""
    text = SHIPPED_POLICY.read_text()
    section = re.search(r"\[namespaces\.sessions\][^\[]*", text)
    assert section, "the shipped policy has no sessions namespace"
    changed = re.sub(r"(?m)^ttl_seconds = \d+$", f"ttl_seconds = {ttl_seconds}", section.group(0))
    negative = re.sub(r"(?m)^negative_ttl_seconds = \d+$", "negative_ttl_seconds = 60", changed)
    path = directory / "policy.toml"
    path.write_text(text.replace(section.group(0), negative))
    return path


def api(workdir: Path, database: Path, cache_address: str = "", **extra: str) -> Service:
    """An API server on ``database`` (SQLite), its metrics on a free port."""
    env = {
        "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
        "DATABASE_URL": f"sqlite:///{database}",
        "AGENTIC_CACHE_ADDRESS": cache_address,
        "AGENTIC_CACHE_TIMEOUT_SECONDS": "0.5",
        "AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS": "0.5",
        "AGENTIC_TASKS_ENABLED": "false",
        "AGENTIC_SHUTDOWN_GRACE_SECONDS": "1",
        **extra,
    }
    return start_service("server", env, workdir)


def call(channel: grpc.Channel, token: str) -> str:
    """One cheap authenticated call (ListProjects) with ``token``: "OK" or the ErrorInfo
    reason of its refusal (prefixed by the code when it is not UNAUTHENTICATED)."""
    stub = projects_pb2_grpc.ProjectServiceStub(channel)
    try:
        stub.ListProjects(
            ppb.ListProjectsRequest(page_size=1),
            metadata=(("authorization", bearer(token)),),
            timeout=TIMEOUT,
        )
    except grpc.RpcError as error:
        status = rich_status(error)
        if status.code is grpc.StatusCode.UNAUTHENTICATED:
            return status.reason
        return f"{status.code.name}:{status.reason}"
    return "OK"

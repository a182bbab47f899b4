"""The README's grpcurl examples of AdminService are valid requests, as written.

Each ``ga -d '...' $A agentic.admin.v1.AdminService/<Rpc>`` body of the "Management RPCs"
section must parse as the RPC's request in the proto3 JSON form grpcurl reads (a Duration
as ``"86400s"``, enums by name) and pass its protovalidate rules.
"""

from __future__ import annotations

import re

import protovalidate
from agentic.admin.v1 import admin_pb2
from google.protobuf import json_format

from tests._support import REPO

SERVICE = "agentic.admin.v1.AdminService"


def _examples() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Management RPCs\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"ga -d '(.*?)'\s*\\?\s*\$A " + re.escape(SERVICE) + r"/(\w+)", section)
    return [(rpc, body) for body, rpc in found]


def test_the_readme_admin_calls_are_valid_requests() -> None:
    examples = _examples()
    names = {rpc for rpc, _ in examples}
    service = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
    assert names == {m.name for m in service.methods}, "every AdminService RPC has an example"
    validator = protovalidate.Validator()
    for rpc, body in examples:
        request = getattr(admin_pb2, f"{rpc}Request")()
        json_format.Parse(body, request)
        validator.validate(request)
    purge = [b for rpc, b in examples if rpc == "PurgeTasks"]
    parsed = admin_pb2.PurgeTasksRequest()
    json_format.Parse(purge[0], parsed)
    assert parsed.older_than.seconds == 30 * 86400
    assert parsed.dry_run

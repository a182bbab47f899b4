"""The README's grpcurl examples of the real-work kinds are valid requests, as written.

Each ``ga -d '...' $A agentic.tasks.v1.TaskService/Submit<Kind>`` body of the "Real work"
section, with its placeholders filled in, must parse as the RPC's request (field and enum
names as grpcurl reads them: the proto3 JSON mapping) and pass the request's protovalidate
rules, so an operator copying it gets the task, not INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
import uuid

import protovalidate
from agentic.tasks.v1 import tasks_pb2
from google.protobuf import json_format

from tests._support import REPO

SERVICE = "agentic.tasks.v1.TaskService"


def _examples() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Real work: profiles, analytics and compliance reports\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    found = re.findall(
        r"ga -d '(.*?)'\s*\\?\s*\$A " + re.escape(SERVICE) + r"/(Submit\w+)", section, re.S
    )
    return {rpc: data for data, rpc in found}


def _filled(body: str) -> str:
    body = body.replace("'$(rid)'", str(uuid.uuid4()))
    for placeholder in ("<project id>", "<dataset id>", "<export id>"):
        body = body.replace(placeholder, str(uuid.uuid4()))
    return body


def test_the_readme_submits_are_valid_requests() -> None:
    examples = _examples()
    assert set(examples) == {"SubmitProfileDataset", "SubmitAnalytics", "SubmitComplianceReport"}
    validator = protovalidate.Validator()
    for rpc, body in examples.items():
        request = getattr(tasks_pb2, f"{rpc}Request")()
        json_format.Parse(_filled(body), request)
        validator.validate(request)  # raises ValidationError naming the violations
        specs = [f.name for f in request.DESCRIPTOR.fields if f.message_type is not None]
        assert [name for name in specs if request.HasField(name)] == specs, rpc

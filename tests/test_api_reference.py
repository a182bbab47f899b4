"""docs/api.md is rendered from the contract, complete, and current.

The page is what users of other languages read instead of the Python code, so it must
name every service, RPC, message and enum of the ``agentic.*`` packages, show the roles the
API server's table allows and the protovalidate rules, and equal a fresh rendering
(``make docs`` rewrites it).
"""

from __future__ import annotations

import re

import pytest
from google.protobuf import descriptor_pb2

from devtools.apidocs import API_MD, render
from devtools.descriptors import build
from server.access import RPC_ROLES
from tests._support import REPO


@pytest.fixture(scope="module")
def protoset() -> bytes:
    """The contract's descriptor set, built from protos/ now."""
    return build()


@pytest.fixture(scope="module")
def page(protoset: bytes) -> str:
    """docs/api.md rendered now."""
    return render(protoset)


def test_api_reference_is_current(page: str) -> None:
    assert API_MD.exists(), f"{API_MD} is missing: run `make docs`"
    assert API_MD.read_text(encoding="utf-8") == page, (
        f"{API_MD.relative_to(REPO)} differs from the protos: "
        "run `python -m devtools.apidocs` (`make docs`)"
    )


def test_rendering_is_deterministic(protoset: bytes, page: str) -> None:
    assert render(protoset) == page


def _names(
    messages: list[descriptor_pb2.DescriptorProto], scope: str
) -> tuple[list[str], list[str]]:
    found, enums = [], []
    for message in messages:
        name = f"{scope}.{message.name}"
        if not message.options.map_entry:
            found.append(name)
        enums += [f"{name}.{e.name}" for e in message.enum_type]
        more, more_enums = _names(list(message.nested_type), name)
        found += more
        enums += more_enums
    return found, enums


def test_every_element_of_the_contract_has_its_section(protoset: bytes, page: str) -> None:
    headings = set(re.findall(r"^#+ (?:Service |Message |Enum )?`([^`]+)`$", page, re.M))
    for file in descriptor_pb2.FileDescriptorSet.FromString(protoset).file:
        if not file.package.startswith("agentic."):
            continue
        messages, enums = _names(list(file.message_type), file.package)
        enums += [f"{file.package}.{e.name}" for e in file.enum_type]
        for service in file.service:
            assert f"{file.package}.{service.name}" in headings
            for method in service.method:
                assert f"{service.name}.{method.name}" in headings
        missing = [n for n in messages + enums if n not in headings]
        assert not missing, f"{file.name}: no section for {missing}"


def test_roles_come_from_the_servers_table(page: str) -> None:
    rows = dict(re.findall(r"^\| \[`(\w+)`\]\(#[\w-]+\) \|.*\| ([^|]+) \|$", page, re.M))
    for method, roles in RPC_ROLES.items():
        name = method.rsplit("/", 1)[1]
        assert rows[name].count(",") + 1 == len(roles), (method, rows[name])
    assert rows["SubmitRetention"] == "Administrator"
    assert rows["CreateProject"] == "Administrator, Project Manager"


def test_fields_show_their_types_labels_and_rules(page: str) -> None:
    section = page.split("### Message `agentic.artifacts.v1.CreateUploadRequest`", 1)[1]
    section = section.split("\n### ", 1)[0]
    assert "| `project_id` = 1 | `string` |  | `string.uuid` | The project" in section
    assert "`string.min_len=1`<br>`string.max_len=200`<br>`cel name.no_control" in section
    assert "| `size_bytes` = 5 | `int64` | optional | `int64.gte=0` |" in section
    assert "`enum.not_in=[0]`" in section
    assert "Rules: `cel format.datasets_only: format is required for datasets" in section
    assert "| `state` = 3 | [`TaskState`](#agentic-tasks-v1-taskstate) |" in page
    assert "| `TASK_STATE_SUCCEEDED` | 5 | Finished with a result. Terminal. |" in page

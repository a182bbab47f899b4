"""RuleSetService over real gRPC against a real server process, on SQLite and PostgreSQL."""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from agentic.compliance.v1 import rule_sets_pb2 as pb
from agentic.compliance.v1 import rule_sets_pb2_grpc
from google.protobuf import field_mask_pb2
from sqlalchemy import delete, select

from core.db import RuleSetRow
from server.auth import Role
from tests._identity import ADMIN, authorized_channel
from tests._support import REPO
from tests.conftest import Api
from tests.server.projects.test_projects_api import failure

TIMEOUT = 10.0
DOMAIN = "agentic.compliance.v1"
ASPICE = tomllib.loads((REPO / "core" / "compliance" / "aspice-3.1.toml").read_text())


@pytest.fixture(scope="module")
def stub(api: Api) -> rule_sets_pb2_grpc.RuleSetServiceStub:
    return rule_sets_pb2_grpc.RuleSetServiceStub(api.channel)


def processes(*ids: str) -> list[pb.Process]:
    return [
        pb.Process(
            id=pid,
            name=f"process {pid}",
            work_products=[pb.WorkProduct(id="17-11", name="Software requirements specification")],
            checks=[pb.CHECK_REQUIREMENT_HAS_TEST],
        )
        for pid in ids
    ]


def create(
    stub: rule_sets_pb2_grpc.RuleSetServiceStub, name: str | None = None, *ids: str
) -> pb.RuleSet:
    request = pb.CreateRuleSetRequest(
        rule_set=pb.RuleSet(
            name=name or f"rs-{uuid.uuid4().hex[:8]}",
            description="ours",
            source="team handbook",
            processes=processes(*(ids or ("SWE.1",))),
        )
    )
    created: pb.RuleSet = stub.CreateRuleSet(request, timeout=TIMEOUT).rule_set
    return created


def get(stub: rule_sets_pb2_grpc.RuleSetServiceStub, rule_set_id: str) -> pb.RuleSet:
    found: pb.RuleSet = stub.GetRuleSet(
        pb.GetRuleSetRequest(id=rule_set_id), timeout=TIMEOUT
    ).rule_set
    return found


def update_request(rule_set_id: str, etag: str = "", **fields: Any) -> pb.UpdateRuleSetRequest:
    return pb.UpdateRuleSetRequest(
        id=rule_set_id,
        rule_set=pb.RuleSet(**fields),
        update_mask=field_mask_pb2.FieldMask(paths=sorted(fields)),
        etag=etag,
    )


def rows(api: Api) -> list[tuple[Any, ...]]:
    with api.engine.connect() as conn:
        result = conn.execute(select(RuleSetRow.__table__).order_by(RuleSetRow.id))
        return [tuple(r) for r in result]


def test_the_builtin_set_is_served_as_transcribed(
    stub: rule_sets_pb2_grpc.RuleSetServiceStub,
) -> None:
    found = get(stub, "aspice-3.1")
    assert (found.id, found.version, found.built_in) == ("aspice-3.1", "3.1", True)
    assert found.source == ASPICE["source"]
    # Compared with the data file read here, independently of the server's loader.
    assert [(p.id, [w.id for w in p.work_products]) for p in found.processes] == [
        (p["id"], [w["id"] for w in p["work_products"]]) for p in ASPICE["processes"]
    ]
    swe1 = next(p for p in found.processes if p.id == "SWE.1")
    assert {"17-11", "17-08", "17-50", "13-22"} <= {w.id for w in swe1.work_products}
    assert found.etag
    assert found.create_time.seconds > 0


def test_create_get_round_trip(api: Api, stub: rule_sets_pb2_grpc.RuleSetServiceStub) -> None:
    created = create(stub, None, "SWE.1", "SUP.10")
    uuid.UUID(created.id, version=4)
    assert (created.version, created.built_in, created.owner_id) == ("1", False, ADMIN)
    assert (created.description, created.source) == ("ours", "team handbook")
    assert list(created.processes) == processes("SWE.1", "SUP.10")
    assert created.etag
    assert created.update_time == created.create_time
    assert get(stub, created.id) == created


def test_create_ignores_output_only_fields(stub: rule_sets_pb2_grpc.RuleSetServiceStub) -> None:
    request = pb.CreateRuleSetRequest(
        rule_set=pb.RuleSet(
            name=f"o-{uuid.uuid4().hex}",
            processes=processes("MAN.3"),
            id="aspice-3.1",
            version="99",
            built_in=True,
            etag="x",
            owner_id="mallory",
        )
    )
    created = stub.CreateRuleSet(request, timeout=TIMEOUT).rule_set
    assert created.id != "aspice-3.1"
    assert (created.version, created.built_in, created.owner_id) == ("1", False, ADMIN)
    assert created.etag != "x"


def test_duplicate_names_are_already_exists(
    api: Api, stub: rule_sets_pb2_grpc.RuleSetServiceStub
) -> None:
    first = create(stub)
    before = rows(api)
    for name in (first.name, ASPICE["name"]):
        f = failure(lambda name=name: create(stub, name))  # type: ignore[misc]
        assert f.code == grpc.StatusCode.ALREADY_EXISTS
        assert (f.reason, f.domain) == ("RULE_SET_NAME_TAKEN", DOMAIN)
    second = create(stub)
    f = failure(
        lambda: stub.UpdateRuleSet(update_request(second.id, name=first.name), timeout=TIMEOUT)
    )
    assert (f.code, f.reason) == (grpc.StatusCode.ALREADY_EXISTS, "RULE_SET_NAME_TAKEN")
    assert get(stub, second.id) == second
    assert len(rows(api)) == len(before) + 1


@pytest.mark.parametrize(
    ("rule_set", "field", "reason"),
    [
        (pb.RuleSet(processes=processes("SWE.1")), "rule_set.name", "string.min_len"),
        (pb.RuleSet(name="x"), "rule_set.processes", "repeated.min_items"),
        (
            pb.RuleSet(name="x" * 201, processes=processes("SWE.1")),
            "rule_set.name",
            "string.max_len",
        ),
        (
            pb.RuleSet(name="x", processes=processes("SWE.1", "SWE.1")),
            "rule_set.processes",
            "processes.unique_ids",
        ),
        (
            pb.RuleSet(name="x", processes=[pb.Process(id="swe1", name="a")]),
            "rule_set.processes[0].id",
            "string.pattern",
        ),
        (
            pb.RuleSet(
                name="x",
                processes=[
                    pb.Process(
                        id="SWE.1",
                        name="a",
                        work_products=[pb.WorkProduct(id="17-11", name="a")] * 2,
                    )
                ],
            ),
            "rule_set.processes[0].work_products",
            "work_products.unique_ids",
        ),
        (
            pb.RuleSet(
                name="x",
                processes=[
                    pb.Process(
                        id="SWE.1", name="a", work_products=[pb.WorkProduct(id="1711", name="a")]
                    )
                ],
            ),
            "rule_set.processes[0].work_products[0].id",
            "string.pattern",
        ),
        (
            pb.RuleSet(
                name="x",
                processes=[pb.Process(id="SWE.1", name="a", checks=[pb.CHECK_UNSPECIFIED])],
            ),
            "rule_set.processes[0].checks[0]",
            "enum.not_in",
        ),
        (
            pb.RuleSet(
                name="x",
                processes=[
                    pb.Process(
                        id="SWE.1",
                        name="a",
                        checks=[pb.CHECK_LINKS_RESOLVE, pb.CHECK_LINKS_RESOLVE],
                    )
                ],
            ),
            "rule_set.processes[0].checks",
            "repeated.unique",
        ),
        (
            pb.RuleSet(name="x", processes=processes("SWE.1"), description="d" * 2001),
            "rule_set.description",
            "string.max_len",
        ),
    ],
)
def test_invalid_rule_sets_are_refused_with_field_violations(
    api: Api,
    stub: rule_sets_pb2_grpc.RuleSetServiceStub,
    rule_set: pb.RuleSet,
    field: str,
    reason: str,
) -> None:
    before = rows(api)
    f = failure(
        lambda: stub.CreateRuleSet(pb.CreateRuleSetRequest(rule_set=rule_set), timeout=TIMEOUT)
    )
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f.domain == DOMAIN
    assert f.violation_reasons.get(field) == reason, f.violation_reasons
    assert rows(api) == before


def test_update_changes_only_the_masked_fields_and_the_version(
    stub: rule_sets_pb2_grpc.RuleSetServiceStub,
) -> None:
    created = create(stub, None, "SWE.1")
    # name is empty in the message but not masked: its rules do not apply.
    updated = stub.UpdateRuleSet(
        update_request(created.id, created.etag, description="v2"), timeout=TIMEOUT
    ).rule_set
    assert (updated.name, updated.description, updated.version) == (created.name, "v2", "2")
    assert list(updated.processes) == list(created.processes)
    assert updated.etag != created.etag
    assert updated.create_time == created.create_time
    assert updated.update_time.ToNanoseconds() >= created.update_time.ToNanoseconds()
    replaced = stub.UpdateRuleSet(
        update_request(updated.id, processes=processes("SYS.2", "SYS.3")), timeout=TIMEOUT
    ).rule_set
    assert [p.id for p in replaced.processes] == ["SYS.2", "SYS.3"]
    assert (replaced.version, replaced.description) == ("3", "v2")
    assert get(stub, created.id) == replaced


def test_stale_etag_is_aborted_and_changes_nothing(
    stub: rule_sets_pb2_grpc.RuleSetServiceStub,
) -> None:
    created = create(stub)
    current = stub.UpdateRuleSet(
        update_request(created.id, created.etag, description="first"), timeout=TIMEOUT
    ).rule_set
    for call in (
        lambda: stub.UpdateRuleSet(
            update_request(created.id, created.etag, description="second"), timeout=TIMEOUT
        ),
        lambda: stub.DeleteRuleSet(
            pb.DeleteRuleSetRequest(id=created.id, etag=created.etag), timeout=TIMEOUT
        ),
    ):
        f = failure(call)
        assert (f.code, f.reason, f.domain) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH", DOMAIN)
    assert get(stub, created.id) == current


def test_concurrent_updates_with_one_etag_let_exactly_one_win(
    stub: rule_sets_pb2_grpc.RuleSetServiceStub,
) -> None:
    created = create(stub)

    def attempt(n: int) -> str:
        try:
            stub.UpdateRuleSet(
                update_request(created.id, created.etag, description=f"writer {n}"), timeout=TIMEOUT
            )
        except grpc.RpcError as error:
            return str(error.code().name)
        return "OK"

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(attempt, range(8)))
    assert outcomes == ["ABORTED"] * 7 + ["OK"]
    assert get(stub, created.id).version == "2"


def test_the_builtin_set_is_read_only(
    api: Api, stub: rule_sets_pb2_grpc.RuleSetServiceStub
) -> None:
    before = get(stub, "aspice-3.1")
    for call in (
        lambda: stub.UpdateRuleSet(
            update_request("aspice-3.1", description="mine"), timeout=TIMEOUT
        ),
        lambda: stub.DeleteRuleSet(pb.DeleteRuleSetRequest(id="aspice-3.1"), timeout=TIMEOUT),
    ):
        f = failure(call)
        assert (f.code, f.reason, f.domain) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "RULE_SET_BUILT_IN",
            DOMAIN,
        )
    assert get(stub, "aspice-3.1") == before


def test_missing_ids_are_not_found(stub: rule_sets_pb2_grpc.RuleSetServiceStub) -> None:
    missing = str(uuid.uuid4())
    for call in (
        lambda: stub.GetRuleSet(pb.GetRuleSetRequest(id=missing), timeout=TIMEOUT),
        lambda: stub.GetRuleSet(pb.GetRuleSetRequest(id="aspice-9.9"), timeout=TIMEOUT),
        lambda: stub.UpdateRuleSet(update_request(missing, description="x"), timeout=TIMEOUT),
        lambda: stub.DeleteRuleSet(pb.DeleteRuleSetRequest(id=missing), timeout=TIMEOUT),
    ):
        f = failure(call)
        assert (f.code, f.reason) == (grpc.StatusCode.NOT_FOUND, "RULE_SET_NOT_FOUND")


def test_delete_removes_it_and_a_second_delete_is_not_found(
    api: Api, stub: rule_sets_pb2_grpc.RuleSetServiceStub
) -> None:
    created = create(stub)
    stub.DeleteRuleSet(pb.DeleteRuleSetRequest(id=created.id, etag=created.etag), timeout=TIMEOUT)
    assert created.id not in {r[0] for r in rows(api)}
    for call in (
        lambda: get(stub, created.id),
        lambda: stub.DeleteRuleSet(pb.DeleteRuleSetRequest(id=created.id), timeout=TIMEOUT),
    ):
        assert failure(call).code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GetRuleSetRequest(id="Not An Id"), "id"),
        (pb.GetRuleSetRequest(), "id"),
        (pb.DeleteRuleSetRequest(id="x" * 65), "id"),
        (
            pb.UpdateRuleSetRequest(
                id=str(uuid.uuid4()),
                rule_set=pb.RuleSet(description="d"),
                update_mask=field_mask_pb2.FieldMask(),
            ),
            "update_mask",
        ),
        (
            pb.UpdateRuleSetRequest(
                id=str(uuid.uuid4()),
                rule_set=pb.RuleSet(built_in=True),
                update_mask=field_mask_pb2.FieldMask(paths=["built_in"]),
            ),
            "update_mask",
        ),
        (pb.ListRuleSetsRequest(page_size=1001), "page_size"),
        (pb.ListRuleSetsRequest(page_token="garbage"), "page_token"),
    ],
)
def test_bad_requests_are_invalid_argument(
    stub: rule_sets_pb2_grpc.RuleSetServiceStub, request_: Any, field: str
) -> None:
    method = {
        pb.GetRuleSetRequest: stub.GetRuleSet,
        pb.DeleteRuleSetRequest: stub.DeleteRuleSet,
        pb.UpdateRuleSetRequest: stub.UpdateRuleSet,
        pb.ListRuleSetsRequest: stub.ListRuleSets,
    }[type(request_)]
    f = failure(lambda: method(request_, timeout=TIMEOUT))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert any(v == field or v.startswith(field + ".") for v in f.violations), f.violations


def test_list_pages_builtin_first_then_custom_in_creation_order(
    api: Api, stub: rule_sets_pb2_grpc.RuleSetServiceStub
) -> None:
    with api.engine.begin() as conn:  # a known custom population: only this test's sets
        conn.execute(delete(RuleSetRow))
    made = [create(stub).id for _ in range(5)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stub.ListRuleSets(
            pb.ListRuleSetsRequest(page_size=2, page_token=token), timeout=TIMEOUT
        )
        assert len(page.rule_sets) <= 2
        seen += [r.id for r in page.rule_sets]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ["aspice-3.1", *made]
    assert pages == 3
    whole = stub.ListRuleSets(pb.ListRuleSetsRequest(), timeout=TIMEOUT).rule_sets
    assert [r.id for r in whole] == ["aspice-3.1", *made]
    assert whole[0] == get(stub, "aspice-3.1")
    assert whole[1] == get(stub, made[0])
    one = stub.ListRuleSets(pb.ListRuleSetsRequest(page_size=1), timeout=TIMEOUT)
    assert [r.id for r in one.rule_sets] == ["aspice-3.1"]
    rest = stub.ListRuleSets(
        pb.ListRuleSetsRequest(page_size=1000, page_token=one.next_page_token), timeout=TIMEOUT
    )
    assert [r.id for r in rest.rule_sets] == made
    assert rest.next_page_token == ""


@pytest.fixture(scope="module")
def readers(api: Api) -> Iterator[dict[Role, rule_sets_pb2_grpc.RuleSetServiceStub]]:
    channels = {
        role: authorized_channel(api.service.address, f"u-{role.value}", (role,)) for role in Role
    }
    yield {role: rule_sets_pb2_grpc.RuleSetServiceStub(c) for role, c in channels.items()}
    for channel in channels.values():
        channel.close()


def test_a_project_manager_changes_a_set_another_created(
    stub: rule_sets_pb2_grpc.RuleSetServiceStub,
    readers: dict[Role, rule_sets_pb2_grpc.RuleSetServiceStub],
) -> None:
    # Rule sets are shared reference data: the role table alone decides who writes.
    created = create(stub)
    manager = readers[Role.PROJECT_MANAGER]
    updated = manager.UpdateRuleSet(update_request(created.id, description="pm"), timeout=TIMEOUT)
    assert updated.rule_set.owner_id == ADMIN
    assert (
        readers[Role.SUPPORT_ENGINEER]
        .GetRuleSet(pb.GetRuleSetRequest(id=created.id), timeout=TIMEOUT)
        .rule_set
        == updated.rule_set
    )
    f = failure(
        lambda: readers[Role.TECHNICAL_LEAD].DeleteRuleSet(
            pb.DeleteRuleSetRequest(id=created.id), timeout=TIMEOUT
        )
    )
    assert f.code == grpc.StatusCode.PERMISSION_DENIED

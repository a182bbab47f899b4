"""The built-in rule set's data and the rule-set origin both the server and the worker read."""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from agentic.compliance.v1 import rule_sets_pb2
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import core.compliance
from core import compliance, events
from core.cache import Namespace
from core.compliance._builtin import BuiltinRuleSetError, _parse
from core.db import RuleSetRow, make_engine, migrate

DATA = Path(core.compliance.__file__).parent / "aspice-3.1.toml"

# From the issue (the PAM's table as it quotes it): work products a process must list.
EXPECTED_AT_LEAST = {
    "SWE.1": {"17-11", "17-08", "17-50", "13-22"},
    "SWE.2": {"04-04"},
    "SWE.4": {"08-50", "08-52", "13-50"},
}
PROCESSES = [
    *(f"SYS.{n}" for n in range(1, 6)),
    *(f"SWE.{n}" for n in range(1, 7)),
    "SUP.1",
    "SUP.8",
    "SUP.9",
    "SUP.10",
    "MAN.3",
]


def test_the_aspice_set_has_the_pam_processes_and_is_valid() -> None:
    rule_set = compliance.builtin_rule_sets()[compliance.ASPICE_3_1]
    assert compliance.ASPICE_3_1 == "aspice-3.1"
    assert sorted(compliance.BUILTIN_IDS) == ["aspice-3.1"]
    assert [p.id for p in rule_set.processes] == PROCESSES
    assert compliance.violations(rule_set) == []
    assert rule_set.built_in
    assert rule_set.version == "3.1"
    assert "Automotive SPICE" in rule_set.source
    assert "3.1" in rule_set.source
    assert "VDA" in rule_set.source
    assert rule_set.etag
    by_id = {p.id: p for p in rule_set.processes}
    for process_id, expected in EXPECTED_AT_LEAST.items():
        assert expected <= {w.id for w in by_id[process_id].work_products}, process_id
    names = {w.id: w.name for p in rule_set.processes for w in p.work_products}
    assert names["17-11"] == "Software requirements specification"
    assert names["04-04"] == "Software architectural design"
    assert names["13-50"] == "Test result"


def test_the_message_equals_the_data_file_read_independently() -> None:
    # tomllib on the file, compared field by field: the loader drops or renames nothing.
    data = tomllib.loads(DATA.read_text("utf-8"))
    rule_set = compliance.builtin_rule_sets()["aspice-3.1"]
    assert rule_set.name == data["name"]
    assert rule_set.description == data["description"]
    got = [
        (
            p.id,
            p.name,
            [(w.id, w.name) for w in p.work_products],
            [rule_sets_pb2.Check.Name(c) for c in p.checks],
        )
        for p in rule_set.processes
    ]
    want = [
        (p["id"], p["name"], [(w["id"], w["name"]) for w in p["work_products"]], p["checks"])
        for p in data["processes"]
    ]
    assert got == want


def test_every_work_product_id_has_one_name_across_processes() -> None:
    names: dict[str, set[str]] = {}
    for process in compliance.builtin_rule_sets()["aspice-3.1"].processes:
        for wp in process.work_products:
            names.setdefault(wp.id, set()).add(wp.name)
    assert {k: v for k, v in names.items() if len(v) > 1} == {}


def test_checks_follow_the_documented_mapping() -> None:
    checks = {
        p.id: {rule_sets_pb2.Check.Name(c) for c in p.checks}
        for p in compliance.builtin_rule_sets()["aspice-3.1"].processes
    }
    for requirements in ("SYS.2", "SWE.1"):
        assert "CHECK_REQUIREMENT_HAS_PARENT" in checks[requirements]
    for qualification in ("SYS.5", "SWE.6"):
        assert {"CHECK_REQUIREMENT_HAS_TEST", "CHECK_TEST_HAS_RESULT"} <= checks[qualification]
    for design in ("SYS.3", "SWE.2"):
        assert "CHECK_DESIGN_HAS_REQUIREMENT" in checks[design]
    for support in ("SYS.1", "SUP.1", "SUP.8", "SUP.9", "SUP.10", "MAN.3"):
        assert checks[support] == set()


def test_a_copy_is_the_callers_own() -> None:
    first = compliance.load_rule_set(_no_database(), "aspice-3.1")
    assert first is not None
    first.processes.pop()
    second = compliance.load_rule_set(_no_database(), "aspice-3.1")
    assert second is not None
    assert len(second.processes) == len(PROCESSES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('id = "aspice-3.1"\nname = "x"\n', "processes: must contain at least 1 item"),
        ('id = "other"\nname = "x"\n', "expected 'aspice-3.1'"),
        ('id = "aspice-3.1"\nname = "x"\nbogus = 1\n', "bogus"),
        (
            'id = "aspice-3.1"\nname = "x"\n[[processes]]\nid = "SWE.1"\nname = "a"\n'
            '[[processes]]\nid = "SWE.1"\nname = "b"\n',
            "process ids must be unique",
        ),
        (
            'id = "aspice-3.1"\nname = "x"\n[[processes]]\nid = "SWE.1"\nname = "a"\n'
            'work_products = [{id = "17-1", name = "x"}]\n',
            "processes[0].work_products[0].id",
        ),
        (
            'id = "aspice-3.1"\nname = "x"\n[[processes]]\nid = "SWE.1"\nname = "a"\n'
            'checks = ["CHECK_NOPE"]\n',
            "CHECK_NOPE",
        ),
    ],
)
def test_a_bad_data_file_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(BuiltinRuleSetError, match=r"aspice-3\.1\.toml") as raised:
        _parse("aspice-3.1", text)
    assert message in str(raised.value)


def test_events_and_namespace() -> None:
    assert events.EventType.RULE_SET_UPDATED.value == "rule_set.updated"
    for event_type in (
        events.EventType.RULE_SET_CREATED,
        events.EventType.RULE_SET_UPDATED,
        events.EventType.RULE_SET_DELETED,
    ):
        assert event_type.key_field == "rule_set_id"
    assert Namespace.RULE_SETS.value == "rule_sets"


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=1)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


def test_a_custom_set_round_trips_through_its_row(engine: Engine) -> None:
    processes = [
        rule_sets_pb2.Process(
            id="SWE.1",
            name="Software Requirements Analysis",
            work_products=[rule_sets_pb2.WorkProduct(id="17-11", name="SRS")],
            checks=[rule_sets_pb2.CHECK_REQUIREMENT_HAS_PARENT],
        ),
        rule_sets_pb2.Process(id="MAN.3", name="Project Management"),
    ]
    rule_set_id = str(uuid.uuid4())
    created = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        session.add(
            RuleSetRow(
                id=rule_set_id,
                name=f"custom-{rule_set_id}",
                description="d",
                source="ours",
                processes=compliance.encode_processes(processes),
                owner_id="alice",
                create_time=created,
                update_time=created,
                version=3,
            )
        )
    loaded = compliance.load_rule_set(engine, rule_set_id)
    with Session(engine) as session:
        assert compliance.load_rule_set(session, rule_set_id) == loaded
    assert loaded is not None
    assert list(loaded.processes) == processes
    assert (loaded.name, loaded.description, loaded.source) == (
        f"custom-{rule_set_id}",
        "d",
        "ours",
    )
    assert (loaded.version, loaded.owner_id, loaded.built_in) == ("3", "alice", False)
    assert loaded.etag == compliance.etag_of(rule_set_id, 3)
    assert loaded.etag != compliance.etag_of(rule_set_id, 4)
    assert loaded.create_time.ToDatetime(tzinfo=UTC) == created
    assert compliance.violations(loaded) == []
    assert compliance.load_rule_set(engine, str(uuid.uuid4())) is None


def _no_database() -> Engine:
    # A built-in id must never reach the database: an engine that cannot connect proves it.
    return make_engine("postgresql://nobody@127.0.0.1:1/none", pool_size=1)

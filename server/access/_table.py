"""Function-level authorization: which roles may call which RPC (OWASP API5).

One table, deny by default. A method missing from it is refused for everyone except
through ``PUBLIC_METHODS`` (health and reflection, reachable without a token so load
balancers and ``grpcurl describe`` work). A test walks every RPC of every service and
fails when one is missing here, so a new RPC cannot ship open by accident.

The README's roles table is rendered from this one (``roles_table_markdown``; rewrite it
with ``python -m server.access``), a test fails when the two differ, and
``tests/server/access/test_access_matrix.py`` checks every cell against real calls. A new task
kind's ``Submit<Name>`` needs its entry here like any other RPC. The methods of
google.longrunning.Operations are not declared but derived: each has the roles of the
TaskService RPC it runs (``OPERATION_TASK_RPCS``).
"""

from __future__ import annotations

from collections.abc import Mapping

from server.auth import Role

__all__ = [
    "OPERATION_TASK_RPCS",
    "PUBLIC_PREFIXES",
    "ROLE_TITLES",
    "RPC_ROLES",
    "allowed_roles",
    "is_public",
    "roles_table_markdown",
]

_ADMIN = Role.ADMINISTRATOR
_PM = Role.PROJECT_MANAGER
_TL = Role.TECHNICAL_LEAD
_SE = Role.SUPPORT_ENGINEER
_EVERYONE = frozenset({_ADMIN, _PM, _TL, _SE})

ROLE_TITLES: Mapping[Role, str] = {
    _ADMIN: "Administrator",
    _PM: "Project Manager",
    _TL: "Technical Lead",
    _SE: "Support Engineer",
}
"""The README's column heading of each role, in column order."""

_DECLARED: Mapping[str, frozenset[Role]] = {
    # Projects: managers create and delete; leads edit; everybody may read what they reach.
    "/agentic.projects.v1.ProjectService/CreateProject": frozenset({_ADMIN, _PM}),
    "/agentic.projects.v1.ProjectService/GetProject": _EVERYONE,
    "/agentic.projects.v1.ProjectService/ListProjects": _EVERYONE,
    "/agentic.projects.v1.ProjectService/UpdateProject": frozenset({_ADMIN, _PM, _TL}),
    "/agentic.projects.v1.ProjectService/DeleteProject": frozenset({_ADMIN, _PM}),
    # Tasks: probes are operational checks, run by leads and support; managers follow and
    # cancel work in their projects; re-running a failed task is an operator action.
    "/agentic.tasks.v1.TaskService/SubmitProbe": frozenset({_ADMIN, _TL, _SE}),
    # Verifying stored artifacts is an operational check too.
    "/agentic.tasks.v1.TaskService/SubmitVerifyArtifact": frozenset({_ADMIN, _TL, _SE}),
    # The real work: anyone who works on a project's data may profile and query it; the
    # compliance report is the managers' and leads' view of a project.
    "/agentic.tasks.v1.TaskService/SubmitProfileDataset": _EVERYONE,
    "/agentic.tasks.v1.TaskService/SubmitAnalytics": _EVERYONE,
    "/agentic.tasks.v1.TaskService/SubmitComplianceReport": frozenset({_ADMIN, _PM, _TL}),
    # The periodic maintenance jobs touch the whole service: the Administrators' (the beat
    # submits them with an Administrator's token).
    "/agentic.tasks.v1.TaskService/SubmitRetention": frozenset({_ADMIN}),
    "/agentic.tasks.v1.TaskService/SubmitCacheWarm": frozenset({_ADMIN}),
    "/agentic.tasks.v1.TaskService/SubmitBackup": frozenset({_ADMIN}),
    "/agentic.tasks.v1.TaskService/GetTask": _EVERYONE,
    "/agentic.tasks.v1.TaskService/ListTasks": _EVERYONE,
    "/agentic.tasks.v1.TaskService/WatchTask": _EVERYONE,
    "/agentic.tasks.v1.TaskService/CancelTask": frozenset({_ADMIN, _PM, _TL}),
    "/agentic.tasks.v1.TaskService/RetryTask": frozenset({_ADMIN, _TL, _SE}),
    # Artifacts: managers and leads bring documents and datasets in and curate them;
    # everybody may read what their projects hold.
    "/agentic.artifacts.v1.ArtifactService/CreateUpload": frozenset({_ADMIN, _PM, _TL}),
    "/agentic.artifacts.v1.ArtifactService/Write": frozenset({_ADMIN, _PM, _TL}),
    "/agentic.artifacts.v1.ArtifactService/QueryWriteStatus": frozenset({_ADMIN, _PM, _TL}),
    "/agentic.artifacts.v1.ArtifactService/Read": _EVERYONE,
    "/agentic.artifacts.v1.ArtifactService/GetArtifact": _EVERYONE,
    "/agentic.artifacts.v1.ArtifactService/ListArtifacts": _EVERYONE,
    "/agentic.artifacts.v1.ArtifactService/UpdateArtifact": frozenset({_ADMIN, _PM, _TL}),
    "/agentic.artifacts.v1.ArtifactService/DeleteArtifact": frozenset({_ADMIN, _PM, _TL}),
    # Rule sets: what a project is assessed against is the managers' decision; everybody
    # may read them.
    "/agentic.compliance.v1.RuleSetService/CreateRuleSet": frozenset({_ADMIN, _PM}),
    "/agentic.compliance.v1.RuleSetService/GetRuleSet": _EVERYONE,
    "/agentic.compliance.v1.RuleSetService/ListRuleSets": _EVERYONE,
    "/agentic.compliance.v1.RuleSetService/UpdateRuleSet": frozenset({_ADMIN, _PM}),
    "/agentic.compliance.v1.RuleSetService/DeleteRuleSet": frozenset({_ADMIN, _PM}),
    # Operations: the cache, the task pipeline and the audit log are the Administrators'.
    "/agentic.admin.v1.AdminService/GetCacheStats": frozenset({_ADMIN}),
    "/agentic.admin.v1.AdminService/ClearCacheNamespace": frozenset({_ADMIN}),
    "/agentic.admin.v1.AdminService/GetTaskStats": frozenset({_ADMIN}),
    "/agentic.admin.v1.AdminService/PurgeTasks": frozenset({_ADMIN}),
    "/agentic.admin.v1.AdminService/ListAuditEvents": frozenset({_ADMIN}),
    "/agentic.admin.v1.AdminService/ListCacheKeys": frozenset({_ADMIN}),
    "/agentic.admin.v1.AdminService/WarmCache": frozenset({_ADMIN}),
    "/agentic.admin.v1.AdminService/RunJob": frozenset({_ADMIN}),
    "/agentic.admin.v1.AdminService/ListBackups": frozenset({_ADMIN}),
    # Sessions: everyone may log out (end their own session); ending someone else's
    # sessions is the Administrators'.
    "/agentic.sessions.v1.SessionService/RevokeSession": _EVERYONE,
    "/agentic.sessions.v1.SessionService/RevokeSessions": frozenset({_ADMIN}),
}

OPERATION_TASK_RPCS: Mapping[str, str] = {
    "GetOperation": "GetTask",
    "ListOperations": "ListTasks",
    "WaitOperation": "WatchTask",
    "CancelOperation": "CancelTask",
    # Answered UNIMPLEMENTED (server.operations): whoever may see operations learns that,
    # rather than a PERMISSION_DENIED that would suggest another role could delete.
    "DeleteOperation": "GetTask",
}
"""google.longrunning.Operations method -> the TaskService RPC it runs (server.operations):
an operation is a task, so each method has exactly the roles of that RPC (derived below)."""

RPC_ROLES: Mapping[str, frozenset[Role]] = {
    **_DECLARED,
    **{
        f"/google.longrunning.Operations/{method}": _DECLARED[
            f"/agentic.tasks.v1.TaskService/{task_rpc}"
        ]
        for method, task_rpc in OPERATION_TASK_RPCS.items()
    },
}
"""Full method name -> the roles that may call it. Everything else is denied."""

PUBLIC_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
"""Services reachable without a token: health checks and reflection (explicit allow-list)."""


def is_public(method: str) -> bool:
    """Whether ``method`` is on the no-token allow-list."""
    return method.startswith(PUBLIC_PREFIXES)


def allowed_roles(method: str) -> frozenset[Role]:
    """The roles that may call ``method``; empty (nobody) when it is not in the table."""
    return RPC_ROLES.get(method, frozenset())


def roles_table_markdown(table: Mapping[str, frozenset[Role]] = RPC_ROLES) -> str:
    """The README's roles table: one row per RPC in ``table`` order, yes/no per role."""
    lines = [
        "| RPC | " + " | ".join(ROLE_TITLES.values()) + " |",
        "| --- |" + " --- |" * len(ROLE_TITLES),
    ]
    for method, roles in table.items():
        service, name = method.strip("/").split("/")
        cells = " | ".join("yes" if role in roles else "no" for role in ROLE_TITLES)
        lines.append(f"| `{service.rsplit('.', 1)[-1]}/{name}` | {cells} |")
    return "\n".join(lines) + "\n"

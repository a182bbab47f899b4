"""``agentic projects ...``: create, get, list, update (conditional, by field mask), delete."""

from __future__ import annotations

import argparse
from typing import Any

from agentic.projects.v1 import projects_pb2 as pb
from agentic.projects.v1 import projects_pb2_grpc
from google.protobuf import field_mask_pb2

from cli._errors import ExitCode, UsageError
from cli._render import render_list, render_message
from cli._session import Session

__all__ = ["add_commands"]

_COLUMNS = [
    ("id", lambda p: p.id),
    ("name", lambda p: p.name),
    ("owner", lambda p: p.owner_id),
    ("members", lambda p: ", ".join(p.member_ids)),
    ("updated", lambda p: p.update_time.ToJsonString() if p.HasField("update_time") else ""),
]


def _stub(session: Session) -> projects_pb2_grpc.ProjectServiceStub:
    return projects_pb2_grpc.ProjectServiceStub(session.channel)


def _show(session: Session, project: pb.Project) -> None:
    if session.output.json:
        session.output.emit("project", project)
    else:
        render_message(session.output.out, f"project {project.id}", project)


def _create(session: Session, args: argparse.Namespace) -> int:
    project = pb.Project(name=args.name, description=args.description, member_ids=args.member)
    response = session.call(_stub(session).CreateProject, pb.CreateProjectRequest(project=project))
    _show(session, response.project)
    return ExitCode.OK


def _get(session: Session, args: argparse.Namespace) -> int:
    _show(
        session, session.call(_stub(session).GetProject, pb.GetProjectRequest(id=args.id)).project
    )
    return ExitCode.OK


def _list(session: Session, args: argparse.Namespace) -> int:
    request = pb.ListProjectsRequest(
        page_size=args.page_size, page_token=args.page_token, owner_id=args.owner or ""
    )
    response = session.call(_stub(session).ListProjects, request)
    if session.output.json:
        for project in response.projects:
            session.output.emit("project", project)
        if response.next_page_token:
            session.output.emit("page", next_page_token=response.next_page_token)
        return ExitCode.OK
    render_list(session.output.out, "projects", response.projects, _COLUMNS)
    if response.next_page_token:
        session.output.note(f"more: --page-token {response.next_page_token}")
    return ExitCode.OK


def _update(session: Session, args: argparse.Namespace) -> int:
    project = pb.Project()
    paths = []
    if args.name is not None:
        project.name = args.name
        paths.append("name")
    if args.description is not None:
        project.description = args.description
        paths.append("description")
    if args.member is not None:
        project.member_ids.extend(args.member)
        paths.append("member_ids")
    if not paths:
        raise UsageError("nothing to update: give --name, --description or --member")
    request = pb.UpdateProjectRequest(
        id=args.id,
        project=project,
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        etag=args.etag,
    )
    _show(session, session.call(_stub(session).UpdateProject, request).project)
    return ExitCode.OK


def _delete(session: Session, args: argparse.Namespace) -> int:
    session.call(_stub(session).DeleteProject, pb.DeleteProjectRequest(id=args.id, etag=args.etag))
    session.output.emit("deleted", id=args.id)
    if not session.output.json:
        session.output.note(f"deleted project {args.id}")
    return ExitCode.OK


def add_commands(commands: Any) -> None:
    """Add ``projects ...`` to the top-level subcommands."""
    projects = commands.add_parser("projects", help="create, read, update and delete projects")
    sub = projects.add_subparsers(dest="projects_command", required=True, metavar="COMMAND")

    create = sub.add_parser("create", help="a new project owned by the caller")
    create.add_argument("--name", required=True)
    create.add_argument("--description", default="")
    create.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="ID",
        help="a member who may see and edit it (repeatable)",
    )
    create.set_defaults(run=_create)

    get = sub.add_parser("get", help="one project")
    get.add_argument("id")
    get.set_defaults(run=_get)

    list_cmd = sub.add_parser("list", help="the projects the caller reaches")
    list_cmd.add_argument("--owner", metavar="ID")
    list_cmd.add_argument("--page-size", type=int, default=0, metavar="N")
    list_cmd.add_argument("--page-token", default="", metavar="TOKEN")
    list_cmd.set_defaults(run=_list)

    update = sub.add_parser("update", help="change the given fields only")
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--description")
    update.add_argument(
        "--member", action="append", metavar="ID", help="replaces the members (repeatable)"
    )
    update.add_argument("--etag", default="", help="only if still this version (else ABORTED)")
    update.set_defaults(run=_update)

    delete = sub.add_parser("delete", help="delete a project")
    delete.add_argument("id")
    delete.add_argument("--etag", default="", help="only if still this version")
    delete.set_defaults(run=_delete)

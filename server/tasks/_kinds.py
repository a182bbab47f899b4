"""The Submit RPCs, derived from the protos: one per task kind, no servicer code per kind.

Kind ``TASK_KIND_<NAME>`` is submitted by ``TaskService.Submit<Name>`` (the name in
CamelCase: TASK_KIND_PROFILE_DATASET -> SubmitProfileDataset), a unary RPC whose request
carries ``request_id``, ``owner_id``, ``priority``, ``project_id`` and the kind's spec in
the field ``core.tasks.kind_fields`` names, and whose response carries the accepted
``task``. ``derive_submit_rpcs`` checks every kind against that convention and raises one
ValueError naming everything that is missing; ``SUBMIT_RPCS`` is derived when this module
is imported, so a kind that breaks the convention stops the server at start-up rather
than answering UNIMPLEMENTED (or worse, submitting without its rules) later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from agentic.tasks.v1 import tasks_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from core.tasks import kind_fields, submit_method_name
from core.tasks._wire import KindFields

__all__ = ["SUBMIT_RPCS", "SubmitRpc", "derive_submit_rpcs", "submit_method_name", "task_kinds"]

TASK_SERVICE: ServiceDescriptor = tasks_pb2.DESCRIPTOR.services_by_name["TaskService"]

# The fields the generic submit path reads from every Submit request, besides the spec,
# with their types as _type_of names them.
_COMMON_FIELDS: Mapping[str, str] = {
    "request_id": "string",
    "owner_id": "string",
    "priority": tasks_pb2.Priority.DESCRIPTOR.full_name,
    "project_id": "string",
}
_TASK = tasks_pb2.Task.DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class SubmitRpc:
    """One kind's Submit RPC: what the generic submit path needs to serve it."""

    kind: int
    """The TaskKind number."""
    name: str
    """The kind's short name (``probe``): the ``kind`` label of the submit metric."""
    method: str
    """The RPC's name in TaskService: ``SubmitProbe``."""
    full_method: str
    """``/agentic.tasks.v1.TaskService/SubmitProbe``, as the access table names it."""
    spec_field: str
    """The request field holding the spec (the same name as the ``Task.spec`` field)."""
    request_type: type[Message]
    response_type: type[Message]
    """Its ``task`` field holds the accepted task."""

    def spec(self, request: Message) -> Message:
        """The spec carried by ``request``."""
        spec: Message = getattr(request, self.spec_field)
        return spec


def task_kinds() -> dict[int, KindFields]:
    """Every TaskKind but UNSPECIFIED with its wire fields (ValueError on a broken kind)."""
    return {
        kind: kind_fields(kind)
        for kind in tasks_pb2.TaskKind.values()
        if kind != tasks_pb2.TASK_KIND_UNSPECIFIED
    }


def _type_of(field: FieldDescriptor | None) -> str:
    """A singular field's type: a message's or enum's full name, ``string``; "" otherwise."""
    if field is None or field.is_repeated:
        return ""
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return "string" if field.type == FieldDescriptor.TYPE_STRING else ""


def _field_problems(message: Descriptor, wanted: Mapping[str, str]) -> list[str]:
    return [
        f"{message.name} needs field `{type_name.rsplit('.', 1)[-1]} {name}`"
        for name, type_name in wanted.items()
        if _type_of(message.fields_by_name.get(name)) != type_name
    ]


def derive_submit_rpcs(
    service: ServiceDescriptor, kinds: Mapping[int, KindFields]
) -> tuple[SubmitRpc, ...]:
    """One SubmitRpc per kind of ``kinds``, from the methods of ``service``.

    Raises ValueError naming every RPC, request field or response field the convention
    calls for and the protos lack, and every ``Submit*`` RPC that matches no kind.
    """
    problems: list[str] = []
    rpcs: list[SubmitRpc] = []
    for kind, wire in kinds.items():
        enum_name = f"TASK_KIND_{wire.name.upper()}"
        method_name = submit_method_name(wire.name)
        method = service.methods_by_name.get(method_name)
        if method is None:
            problems.append(
                f"{enum_name} needs `rpc {method_name}({method_name}Request) returns "
                f"({method_name}Response)` in {service.full_name}"
            )
            continue
        if method.client_streaming or method.server_streaming:
            problems.append(f"{method_name} must be unary")
        problems += _field_problems(
            method.input_type, {**_COMMON_FIELDS, wire.spec_field: wire.spec_type.full_name}
        )
        problems += _field_problems(method.output_type, {"task": _TASK})
        rpcs.append(
            SubmitRpc(
                kind=kind,
                name=wire.name,
                method=method_name,
                full_method=f"/{service.full_name}/{method_name}",
                spec_field=wire.spec_field,
                request_type=message_factory.GetMessageClass(method.input_type),
                response_type=message_factory.GetMessageClass(method.output_type),
            )
        )
    derived = {rpc.method for rpc in rpcs}
    for name in service.methods_by_name:
        if name.startswith("Submit") and name not in derived:
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name.removeprefix("Submit")).upper()
            problems.append(f"rpc {name} matches no TaskKind (TASK_KIND_{snake})")
    if problems:
        raise ValueError("task kinds break the Submit convention: " + "; ".join(problems))
    return tuple(rpcs)


SUBMIT_RPCS: tuple[SubmitRpc, ...] = derive_submit_rpcs(TASK_SERVICE, task_kinds())
"""The Submit RPC of every task kind, checked against the convention at import."""

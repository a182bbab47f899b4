"""The Submit RPCs derived from the protos, and the convention a new kind must follow.

Broken conventions are built as edited copies of tasks.proto in a private descriptor
pool, so the real protos and the process's default pool stay untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from agentic.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

from core.tasks._wire import KindFields
from server.access import RPC_ROLES
from server.tasks import TaskService
from server.tasks._kinds import SUBMIT_RPCS, derive_submit_rpcs, submit_method_name, task_kinds

# Every real kind: the edited copies below keep all of their RPCs unless an edit drops one.
KINDS: dict[int, KindFields] = task_kinds()
Edit = Callable[[descriptor_pb2.FileDescriptorProto], None]


def _add_with_dependencies(pool: descriptor_pool.DescriptorPool, file: FileDescriptor) -> None:
    for dependency in file.dependencies:
        try:
            pool.FindFileByName(dependency.name)
        except KeyError:
            _add_with_dependencies(pool, dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pool.Add(proto)


def edited_service(edit: Edit) -> ServiceDescriptor:
    """TaskService of a copy of tasks.proto changed by ``edit``, in a private pool."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in tasks_pb2.DESCRIPTOR.dependencies:
        _add_with_dependencies(pool, dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    tasks_pb2.DESCRIPTOR.CopyToProto(proto)
    edit(proto)
    pool.Add(proto)
    return pool.FindServiceByName("agentic.tasks.v1.TaskService")


def message(proto: descriptor_pb2.FileDescriptorProto, name: str) -> descriptor_pb2.DescriptorProto:
    return next(m for m in proto.message_type if m.name == name)


def drop_field(message_name: str, field: str) -> Edit:
    def edit(proto: descriptor_pb2.FileDescriptorProto) -> None:
        fields = message(proto, message_name).field
        fields.remove(next(f for f in fields if f.name == field))

    return edit


def test_one_submit_rpc_per_kind_from_the_real_protos() -> None:
    kinds = [k for k in tasks_pb2.TaskKind.values() if k != tasks_pb2.TASK_KIND_UNSPECIFIED]
    assert [rpc.kind for rpc in SUBMIT_RPCS] == kinds
    probe = next(rpc for rpc in SUBMIT_RPCS if rpc.kind == tasks_pb2.TASK_KIND_PROBE)
    assert probe.method == "SubmitProbe"
    assert probe.full_method == "/agentic.tasks.v1.TaskService/SubmitProbe"
    assert probe.name == "probe"
    assert probe.spec_field == "probe"
    # The generated classes themselves, not look-alikes built from the descriptors.
    assert probe.request_type is tasks_pb2.SubmitProbeRequest
    assert probe.response_type is tasks_pb2.SubmitProbeResponse
    spec = tasks_pb2.ProbeSpec(steps=3)
    assert probe.spec(tasks_pb2.SubmitProbeRequest(probe=spec)) == spec


def test_every_submit_rpc_is_a_method_of_the_servicer_and_has_a_table_entry() -> None:
    for rpc in SUBMIT_RPCS:
        handler = getattr(TaskService, rpc.method)
        assert handler is not getattr(tasks_pb2_grpc.TaskServiceServicer, rpc.method)
        assert handler.__name__ == rpc.method
        assert handler.__doc__, "the RPC's proto comment is the method's docstring"
        assert rpc.full_method in RPC_ROLES


@pytest.mark.parametrize(
    ("kind_name", "method"),
    [("probe", "SubmitProbe"), ("profile_dataset", "SubmitProfileDataset"), ("a_b_c", "SubmitABC")],
)
def test_method_names_are_the_kind_in_camel_case(kind_name: str, method: str) -> None:
    assert submit_method_name(kind_name) == method


def test_the_unedited_copy_passes() -> None:
    derived = derive_submit_rpcs(edited_service(lambda proto: None), KINDS)
    assert [rpc.method for rpc in derived] == [rpc.method for rpc in SUBMIT_RPCS]


@pytest.mark.parametrize(
    ("message_name", "field", "missing"),
    [
        ("SubmitProbeRequest", "priority", "`Priority priority`"),
        ("SubmitProbeRequest", "request_id", "`string request_id`"),
        ("SubmitProbeRequest", "owner_id", "`string owner_id`"),
        ("SubmitProbeRequest", "project_id", "`string project_id`"),
        ("SubmitProbeRequest", "probe", "`ProbeSpec probe`"),
        ("SubmitProbeResponse", "task", "`Task task`"),
    ],
)
def test_a_request_or_response_without_a_convention_field_is_named(
    message_name: str, field: str, missing: str
) -> None:
    with pytest.raises(ValueError, match="break the Submit convention") as raised:
        derive_submit_rpcs(edited_service(drop_field(message_name, field)), KINDS)
    assert f"{message_name} needs field {missing}" in str(raised.value)


def test_a_spec_field_of_another_type_is_named() -> None:
    def edit(proto: descriptor_pb2.FileDescriptorProto) -> None:
        field = next(f for f in message(proto, "SubmitProbeRequest").field if f.name == "probe")
        field.type_name = ".agentic.tasks.v1.ProbeResult"

    with pytest.raises(ValueError, match="SubmitProbeRequest needs field `ProbeSpec probe`"):
        derive_submit_rpcs(edited_service(edit), KINDS)


def test_a_kind_without_its_rpc_is_named() -> None:
    def edit(proto: descriptor_pb2.FileDescriptorProto) -> None:
        methods = proto.service[0].method
        methods.remove(next(m for m in methods if m.name == "SubmitProbe"))

    with pytest.raises(ValueError, match=r"TASK_KIND_PROBE needs `rpc SubmitProbe\("):
        derive_submit_rpcs(edited_service(edit), KINDS)


def test_a_new_kind_without_its_rpc_is_named() -> None:
    probe = KINDS[tasks_pb2.TASK_KIND_PROBE]
    report = KindFields(
        name="export_report",
        spec_field="export_report",
        result_field="export_report_result",
        spec_type=probe.spec_type,
        result_type=probe.result_type,
    )
    with pytest.raises(ValueError, match="TASK_KIND_EXPORT_REPORT needs `rpc SubmitExportReport"):
        derive_submit_rpcs(edited_service(lambda proto: None), {**KINDS, 99: report})


def test_a_submit_rpc_without_a_kind_is_named() -> None:
    def edit(proto: descriptor_pb2.FileDescriptorProto) -> None:
        extra = proto.service[0].method.add()
        extra.CopyFrom(next(m for m in proto.service[0].method if m.name == "SubmitProbe"))
        extra.name = "SubmitExportReport"

    with pytest.raises(
        ValueError, match=r"SubmitExportReport matches no TaskKind \(TASK_KIND_EXPORT_REPORT\)"
    ):
        derive_submit_rpcs(edited_service(edit), KINDS)


def test_a_streaming_submit_is_refused() -> None:
    def edit(proto: descriptor_pb2.FileDescriptorProto) -> None:
        next(m for m in proto.service[0].method if m.name == "SubmitProbe").server_streaming = True

    with pytest.raises(ValueError, match="SubmitProbe must be unary"):
        derive_submit_rpcs(edited_service(edit), KINDS)

"""Request validation against the protovalidate rules written in the protos.

The protos are the contract: field rules live there as ``buf.validate`` annotations, so
every client in every language reads the same rules through ``grpcurl describe``. This
module is the one place the server enforces them.

One convention beyond protovalidate: in a request that carries an ``update_mask``, the
rules of the resource's fields apply only to the fields the mask names (AIP-134). A
partial update of ``description`` must not fail because ``name`` was left empty.

And one check protovalidate cannot express: every path of such a mask must name a field
of the resource message, descending only through message fields. protovalidate's
``field_mask.in`` accepts sub-paths of the listed paths (``name.first`` passes
``in: "name"``), which would hand a servicer a path into a string. A path that does not
resolve is reported on ``update_mask.paths``, where the bad values are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import protovalidate
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from core.rpc._errors import DEFAULT_DOMAIN, FieldViolation, InvalidArgument

if TYPE_CHECKING:
    from google._upb._message import Descriptor as _UpbDescriptor
    from google.protobuf.descriptor import Descriptor as _PyDescriptor

    # Message.DESCRIPTOR is typed as either runtime's descriptor (upb or pure Python).
    _Descriptor: TypeAlias = _PyDescriptor | _UpbDescriptor

_validator = protovalidate.Validator()
_MAX_INDICES_SHOWN = 5


def _path_text(field_path: Any) -> str:
    """Render a buf.validate.FieldPath as ``a.b[2].c["k"]``."""
    out: list[str] = []
    for element in field_path.elements:
        name = element.field_name
        out.append(f".{name}" if out else name)
        subscript = element.subscript  # a oneof: list index or map key, when present
        if subscript is not None:
            quoted = subscript.field == "string_key"
            out.append(f'["{subscript.value}"]' if quoted else f"[{subscript.value}]")
    return "".join(out)


def _update_mask(request: Message) -> tuple[field_mask_pb2.FieldMask, _Descriptor] | None:
    """The request's ``update_mask`` and the resource message it applies to, if it has both.

    The resource is the request's one message field besides the mask (AIP-134:
    ``UpdateProjectRequest.project``); with none or several there is nothing to check against.
    """
    message = request.DESCRIPTOR
    mask_field = message.fields_by_name.get("update_mask")
    if mask_field is None or mask_field.message_type is None:
        return None
    if mask_field.message_type.full_name != field_mask_pb2.FieldMask.DESCRIPTOR.full_name:
        return None
    resources = [
        field.message_type
        for field in message.fields
        if field is not mask_field and field.message_type is not None and not field.is_repeated
    ]
    if len(resources) != 1:
        return None
    mask: field_mask_pb2.FieldMask = getattr(request, "update_mask")  # noqa: B009 - dynamic field
    return mask, resources[0]


def _resolves(path: str, message: _Descriptor) -> bool:
    """Whether ``path`` names a field of ``message``, stepping only into singular messages."""
    current: _Descriptor | None = message
    for segment in path.split("."):
        if current is None:  # the previous segment was a scalar, repeated or map field
            return False
        field = current.fields_by_name.get(segment)
        if field is None:
            return False
        singular_message = field.message_type is not None and not field.is_repeated
        current = field.message_type if singular_message else None
    return True


def _mask_violations(request: Message) -> list[FieldViolation]:
    found = _update_mask(request)
    if found is None:
        return []
    mask, resource = found
    # The description names positions, never the paths: they are client text. A few
    # positions are enough to find the rest; a mask of thousands must not echo thousands.
    bad = [str(i) for i, path in enumerate(mask.paths) if not _resolves(path, resource)]
    if not bad:
        return []
    shown = ", ".join(bad[:_MAX_INDICES_SHOWN]) + (", ..." if len(bad) > _MAX_INDICES_SHOWN else "")
    return [
        FieldViolation(
            field="update_mask.paths",
            description=(
                f"paths at index {shown} do not name fields of {resource.name} "
                "(sub-paths of scalar and repeated fields do not exist)"
            ),
            reason="update_mask.paths.resolve",
        )
    ]


def _masked_out(request: Message, path: str) -> bool:
    """True when ``path`` is a resource field that the request's update_mask leaves alone."""
    descriptor = request.DESCRIPTOR
    mask_field = descriptor.fields_by_name.get("update_mask")
    if mask_field is None or mask_field.message_type is None:
        return False
    if mask_field.message_type.full_name != field_mask_pb2.FieldMask.DESCRIPTOR.full_name:
        return False
    head, _, rest = path.partition(".")
    if not rest or head == "update_mask":
        return False
    resource_field = descriptor.fields_by_name.get(head)
    if resource_field is None or resource_field.message_type is None:
        return False
    mask: field_mask_pb2.FieldMask = getattr(request, "update_mask")  # noqa: B009 - dynamic field
    top = rest.split(".", 1)[0].split("[", 1)[0]
    return top not in set(mask.paths)


def validate_request(request: Message, *, domain: str = DEFAULT_DOMAIN) -> None:
    """Raise InvalidArgument listing every rule the request breaks; return when it is valid.

    ``domain`` goes into the ErrorInfo: the proto package of the service called.
    """
    violations: list[FieldViolation] = []
    try:
        _validator.validate(request)
    except protovalidate.ValidationError as exc:
        for violation in exc.violations:
            proto = violation.proto
            path = _path_text(proto.field) if proto.field is not None else ""
            if _masked_out(request, path):
                continue
            violations.append(
                FieldViolation(field=path, description=proto.message, reason=proto.rule_id)
            )
    violations.extend(_mask_violations(request))
    if violations:
        raise InvalidArgument(violations, domain=domain) from None

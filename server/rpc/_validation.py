"""Request validation against the protovalidate rules written in the protos.

The protos are the contract: field rules live there as ``buf.validate`` annotations, so
every client in every language reads the same rules through ``grpcurl describe``. This
module is the one place the server enforces them.

One convention beyond protovalidate: in a request that carries an ``update_mask``, the
rules of the resource's fields apply only to the fields the mask names (AIP-134). A
partial update of ``description`` must not fail because ``name`` was left empty.
"""

from __future__ import annotations

from typing import Any

import protovalidate
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from server.rpc._errors import DEFAULT_DOMAIN, FieldViolation, InvalidArgument

_validator = protovalidate.Validator()


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
    try:
        _validator.validate(request)
    except protovalidate.ValidationError as exc:
        violations = []
        for violation in exc.violations:
            proto = violation.proto
            path = _path_text(proto.field) if proto.field is not None else ""
            if _masked_out(request, path):
                continue
            violations.append(
                FieldViolation(field=path, description=proto.message, reason=proto.rule_id)
            )
        if violations:
            raise InvalidArgument(violations, domain=domain) from None

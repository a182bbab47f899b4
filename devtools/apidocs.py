"""The API reference (``docs/api.md``), rendered from the contract's descriptor set.

``python -m devtools.apidocs`` (part of ``make docs``) builds the descriptor set of protos/
(``devtools.descriptors.build``, the bytes of ``protos/agentic.protoset``) and writes one
Markdown page: every service and RPC (request, response, streaming, the roles allowed),
message, field (type, label, protovalidate rules, comment) and enum value of the
``agentic.*`` files, with the doc comments the source info carries. The roles come from the
API server's table (``server/access/_table.py``), the rules from each field's
``buf.validate.field`` option, so the page restates nothing by hand (STYLE.md 14).
``--check`` only reports whether the page is current; ``tests/test_api_reference.py`` runs
the same comparison. The output depends on the descriptors alone: deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from buf.validate import validate_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from devtools.descriptors import PROTOSET, build
from server.access._table import ROLE_TITLES, RPC_ROLES
from server.auth import Role

if TYPE_CHECKING:  # a name of the type stubs only
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor

__all__ = ["API_MD", "main", "render"]

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "api.md"

_PACKAGE_PREFIX = "agentic."
# Field numbers of the paths in SourceCodeInfo (descriptor.proto).
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _ONEOF = 2, 3, 4, 8
_VALUE, _METHOD = 2, 2

_OptionsT = TypeVar("_OptionsT", bound=Message)
_RulesT = TypeVar("_RulesT", bound=Message)

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    _FDP.TYPE_DOUBLE: "double",
    _FDP.TYPE_FLOAT: "float",
    _FDP.TYPE_INT64: "int64",
    _FDP.TYPE_UINT64: "uint64",
    _FDP.TYPE_INT32: "int32",
    _FDP.TYPE_FIXED64: "fixed64",
    _FDP.TYPE_FIXED32: "fixed32",
    _FDP.TYPE_BOOL: "bool",
    _FDP.TYPE_STRING: "string",
    _FDP.TYPE_BYTES: "bytes",
    _FDP.TYPE_UINT32: "uint32",
    _FDP.TYPE_SFIXED32: "sfixed32",
    _FDP.TYPE_SFIXED64: "sfixed64",
    _FDP.TYPE_SINT32: "sint32",
    _FDP.TYPE_SINT64: "sint64",
}


@dataclass(frozen=True)
class _File:
    """One .proto file of the set and its comments by source path."""

    proto: descriptor_pb2.FileDescriptorProto
    comments: Mapping[tuple[int, ...], str]

    def comment(self, *path: int) -> str:
        return self.comments.get(path, "")


def _comments(proto: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Source path -> the element's leading (else trailing) comment, ``//`` spacing removed."""
    found = {}
    for location in proto.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text:
            lines = [line[1:] if line.startswith(" ") else line for line in text.splitlines()]
            # Plain text, not Markdown: "uploads/<uuid>" must not become an HTML tag.
            text = "\n".join(lines).strip().replace("<", "\\<").replace(">", "\\>")
            found[tuple(location.path)] = text
    return found


def _anchor(full_name: str) -> str:
    return full_name.replace(".", "-").replace("/", "-").lower()


def _type_link(type_name: str, local: set[str]) -> str:
    """A message or enum type: a link when it is ours, plain code otherwise."""
    name = type_name.lstrip(".")
    if name in local:
        return f"[`{name.rsplit('.', 1)[-1]}`](#{_anchor(name)})"
    return f"`{name}`"


def _code(text: str) -> str:
    """An inline code span for any text, also with backticks in it (CommonMark 6.1)."""
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(text: str) -> str:
    """Text for a table cell: one line, paragraphs kept apart, pipes escaped."""
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    return "<br><br>".join(paragraphs).replace("|", "\\|")


def _rule_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return json.dumps(value.decode("latin-1"))
    return str(value)


def _flatten(rules: Message, prefix: str) -> Iterator[str]:
    """``string.uuid``, ``int32.gte=1``, ``repeated.items.string.pattern="..."`` ..."""
    for field, value in rules.ListFields():
        path = f"{prefix}{field.name}"
        if field.name == "cel" and field.is_repeated:
            for rule in value:
                yield f"cel {rule.id}: {rule.message}" if rule.message else f"cel {rule.id}"
        elif field.is_repeated:
            yield f"{path}=[{', '.join(_rule_value(v) for v in value)}]"
        elif field.message_type is not None:
            nested = list(_flatten(value, f"{path}."))
            yield from nested or [path]
        elif value is True:
            yield path
        elif field.enum_type is not None:
            yield f"{path}={field.enum_type.values_by_number[value].name}"
        else:
            yield f"{path}={_rule_value(value)}"


def _rules(
    options: _OptionsT, extension: _ExtensionFieldDescriptor[_OptionsT, _RulesT]
) -> list[str]:
    """The protovalidate rules in an options message (empty when it has none)."""
    if not options.HasExtension(extension):
        return []
    return list(_flatten(options.Extensions[extension], ""))


def _roles(method: str) -> str:
    roles: frozenset[Role] | None = RPC_ROLES.get(method)
    if roles is None:
        return "not an API server RPC (absent from its roles table)"
    return ", ".join(title for role, title in ROLE_TITLES.items() if role in roles)


class _Renderer:
    """Collects the Markdown of the ``agentic.*`` files of one descriptor set."""

    def __init__(self, files: list[_File]) -> None:
        self.files = files
        self.local: set[str] = set()
        self.maps: dict[str, str] = {}  # map entry type -> "map<K, V>"
        for file in files:
            for message, name in self._messages(file.proto.message_type, file.proto.package):
                self.local.add(name)
                self.local.update(f"{name}.{e.name}" for e in message.enum_type)
            self.local.update(f"{file.proto.package}.{e.name}" for e in file.proto.enum_type)
        for file in files:
            for message, name in self._messages(file.proto.message_type, file.proto.package):
                if message.options.map_entry:
                    key, value = message.field
                    self.maps[name] = f"map<{self._type(key)}, {self._type(value)}>"
        self.out: list[str] = []

    @staticmethod
    def _messages(
        messages: object, scope: str
    ) -> Iterator[tuple[descriptor_pb2.DescriptorProto, str]]:
        for message in messages:  # type: ignore[attr-defined]  # a repeated DescriptorProto
            name = f"{scope}.{message.name}"
            yield message, name
            yield from _Renderer._messages(message.nested_type, name)

    def _type(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type not in (_FDP.TYPE_MESSAGE, _FDP.TYPE_ENUM):
            return f"`{_SCALARS[field.type]}`"
        return self.maps.get(field.type_name.lstrip(".")) or _type_link(field.type_name, self.local)

    def emit(self, *lines: str) -> None:
        self.out.extend(lines)

    def render(self) -> str:
        self.emit(
            "# API reference",
            "",
            "<!-- Generated by `python -m devtools.apidocs` (`make docs`) from the protos; "
            "do not edit. -->",
            "",
            "Every service, RPC, message, field and enum of the `agentic.*` packages, and of",
            "the other APIs the server serves (`google.longrunning.Operations`), from the",
            "protos and their comments. The same contract, with all its imports, is the",
            "descriptor set `protos/agentic.protoset` (`make descriptors`).",
            "",
            "- **Roles**: who may call an RPC (the API server's roles table; deny by default).",
            "- **Rules**: the protovalidate rules of a field (`buf.validate.field`), checked by",
            "  the server before anything else: a request breaking one is `INVALID_ARGUMENT`",
            "  with a `google.rpc.BadRequest` field violation naming the field. "
            "`cel <id>: <message>`",
            "  is a custom rule. Message-level rules are listed under the message.",
            "- **Label**: `repeated`, `optional` (presence tracked), `oneof <name>` (at most one",
            "  of the group is set) or empty (a plain proto3 field).",
            "",
            "## Contents",
            "",
        )
        for file in self.files:
            self.emit(f"- [`{file.proto.name}`](#{_anchor(file.proto.name)})")
            for service in file.proto.service:
                full = f"{file.proto.package}.{service.name}"
                self.emit(f"  - [`{service.name}`](#{_anchor(full)})")
        for file in self.files:
            self._file(file)
        return "\n".join(self.out).rstrip("\n") + "\n"

    def _file(self, file: _File) -> None:
        proto = file.proto
        self.emit("", f'<a id="{_anchor(proto.name)}"></a>', "", f"## {proto.name}", "")
        self.emit(f"Package `{proto.package}`.", "")
        for index, service in enumerate(proto.service):
            self._service(file, service, index)
        for index, message in enumerate(proto.message_type):
            self._message(file, message, proto.package, (_MESSAGE, index))
        for index, enum in enumerate(proto.enum_type):
            self._enum(file, enum, proto.package, (_ENUM, index))

    def _service(self, file: _File, service: descriptor_pb2.ServiceDescriptorProto, i: int) -> None:
        full = f"{file.proto.package}.{service.name}"
        self.emit(f'<a id="{_anchor(full)}"></a>', "", f"### Service `{full}`", "")
        if text := file.comment(_SERVICE, i):
            self.emit(text, "")
        self.emit("| RPC | Request | Response | Roles |", "| --- | --- | --- | --- |")
        for method in service.method:
            request = _type_link(method.input_type, self.local)
            response = _type_link(method.output_type, self.local)
            if method.client_streaming:
                request = f"stream {request}"
            if method.server_streaming:
                response = f"stream {response}"
            link = f"[`{method.name}`](#{_anchor(f'{full}.{method.name}')})"
            roles = _roles(f"/{full}/{method.name}")
            self.emit(f"| {link} | {request} | {response} | {roles} |")
        self.emit("")
        for j, method in enumerate(service.method):
            anchor = _anchor(f"{full}.{method.name}")
            self.emit(f'<a id="{anchor}"></a>', "", f"#### `{service.name}.{method.name}`", "")
            if text := file.comment(_SERVICE, i, _METHOD, j):
                self.emit(text, "")

    def _message(
        self,
        file: _File,
        message: descriptor_pb2.DescriptorProto,
        scope: str,
        path: tuple[int, ...],
    ) -> None:
        full = f"{scope}.{message.name}"
        if message.options.map_entry:
            return
        self.emit(f'<a id="{_anchor(full)}"></a>', "", f"### Message `{full}`", "")
        if text := file.comment(*path):
            self.emit(text, "")
        message_rules = _rules(message.options, validate_pb2.message)
        oneof_rules = {
            index: _rules(oneof.options, validate_pb2.oneof)
            for index, oneof in enumerate(message.oneof_decl)
        }
        if message_rules:
            self.emit("Rules: " + "; ".join(_code(r) for r in message_rules), "")
        for index, oneof in enumerate(message.oneof_decl):
            if oneof_rules[index]:
                rules = "; ".join(_code(r) for r in oneof_rules[index])
                self.emit(f"Oneof `{oneof.name}`: {rules}", "")
        if message.field:
            self.emit(
                "| Field | Type | Label | Rules | Description |",
                "| --- | --- | --- | --- | --- |",
            )
            for index, field in enumerate(message.field):
                self.emit(self._field_row(file, message, field, (*path, _FIELD, index)))
            self.emit("")
        else:
            self.emit("No fields.", "")
        for index, nested in enumerate(message.nested_type):
            self._message(file, nested, full, (*path, _NESTED, index))
        for index, enum in enumerate(message.enum_type):
            self._enum(file, enum, full, (*path, _NESTED_ENUM, index))

    def _field_row(
        self,
        file: _File,
        message: descriptor_pb2.DescriptorProto,
        field: descriptor_pb2.FieldDescriptorProto,
        path: tuple[int, ...],
    ) -> str:
        kind = self._type(field)
        if field.proto3_optional:
            label = "optional"
        elif field.HasField("oneof_index"):
            label = f"oneof `{message.oneof_decl[field.oneof_index].name}`"
        elif field.label == _FDP.LABEL_REPEATED and not kind.startswith("map<"):
            label = "repeated"
        else:
            label = ""
        if kind.startswith("map<"):
            kind = _code(kind)
        rules = "<br>".join(_code(r) for r in _rules(field.options, validate_pb2.field))
        name = f"`{field.name}` = {field.number}"
        return (
            f"| {name} | {kind} | {label} | {rules.replace('|', chr(92) + '|')} "
            f"| {_cell(file.comment(*path))} |"
        )

    def _enum(
        self,
        file: _File,
        enum: descriptor_pb2.EnumDescriptorProto,
        scope: str,
        path: tuple[int, ...],
    ) -> None:
        full = f"{scope}.{enum.name}"
        self.emit(f'<a id="{_anchor(full)}"></a>', "", f"### Enum `{full}`", "")
        if text := file.comment(*path):
            self.emit(text, "")
        self.emit("| Value | Number | Description |", "| --- | --- | --- |")
        for index, value in enumerate(enum.value):
            text = _cell(file.comment(*path, _VALUE, index))
            self.emit(f"| `{value.name}` | {value.number} | {text} |")
        self.emit("")


def _served(proto: descriptor_pb2.FileDescriptorProto) -> bool:
    """Whether the API server serves a service of this (third-party) file."""
    return any(
        f"/{proto.package}.{service.name}/{method.name}" in RPC_ROLES
        for service in proto.service
        for method in service.method
    )


def render(protoset: bytes) -> str:
    """The Markdown reference of a serialized descriptor set's ``agentic.*`` files and of
    the other files whose services the API server serves (google.longrunning)."""
    # Parsed with validate_pb2 imported, so the buf.validate options are typed extensions.
    files = [
        _File(proto, _comments(proto))
        for proto in descriptor_pb2.FileDescriptorSet.FromString(protoset).file
        if proto.package.startswith(_PACKAGE_PREFIX) or _served(proto)
    ]
    files.sort(key=lambda f: f.proto.name)
    return _Renderer(files).render()


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) docs/api.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--protoset",
        type=Path,
        help=f"render this descriptor set instead of a fresh build (e.g. {PROTOSET.name})",
    )
    parser.add_argument("--out", type=Path, default=API_MD)
    parser.add_argument("--check", action="store_true", help="only report whether it is current")
    args = parser.parse_args(argv)
    wanted = render(args.protoset.read_bytes() if args.protoset else build())
    out: Path = args.out
    if args.check:
        if out.exists() and out.read_text(encoding="utf-8") == wanted:
            return 0
        print(f"{out} is stale: run `make docs`", file=sys.stderr)
        return 1
    # Written also when unchanged: make compares its time with its prerequisites'.
    out.write_text(wanted, encoding="utf-8")
    print(f"apidocs: {len(wanted.splitlines())} lines -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

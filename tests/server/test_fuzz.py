"""Property-based fuzzing of every RPC of every service: only defined codes come back.

Services and methods are not listed here: they are read from the generated descriptors
(every ``*_pb2`` module under ``agentic``), and each server under test is asked through
reflection which of them it serves, so an RPC added later is fuzzed without touching this
file. A generated service that no server here serves fails ``test_every_service_is_fuzzed``.

Two properties per RPC, on the API server (SQLite and PostgreSQL) and the cache sidecar:

* field values: a message strategy built from the request's descriptor (scalars at and
  past their limits, strings with NUL, control characters and odd Unicode, bytes, unknown
  enum values, repeated and nested fields, oneofs, FieldMask paths drawn from the real
  field names and their sub-paths), sent with an Administrator token and, for a quarter of
  the calls, with a non-admin one;
* raw bytes: arbitrary bytes and mutated serializations, sent without any serializer.

A client-streaming RPC (ByteStream Write) gets a stream of one to three such requests (or
raw byte strings) per call. Either way the answer must be OK or a defined error (never
UNKNOWN or INTERNAL), with no traceback text or exception class names in the status, and
the server must still be SERVING afterwards. Strings found in responses (ids, etags, lease
tokens, namespaces, upload names) are fed back into later requests, so updates, deletes and
writes reach real rows, not just NOT_FOUND.

Hypothesis runs derandomized without an example database: the same examples on every run,
nothing written to disk. Time is bounded twice: ``max_examples`` per RPC, and a wall-clock
budget per test after which the remaining examples send nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import agentic
import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2, artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2, projects_pb2_grpc
from buf.validate import validate_pb2
from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests._identity import SERVICE_ACCOUNT_LIMITS, Role, bearer, token
from tests._processes import Memcached, Service, free_port, start_service, start_sidecar
from tests._support import fresh_database, health_status
from tests.cache_sidecar._support import TEST_POLICY

EXAMPLES_PER_RPC = 75
"""Field-value examples per RPC and server (45 RPC-server pairs: ~3.4k calls, within the budget)."""
RAW_EXAMPLES_PER_RPC = 25
"""Raw-bytes examples per RPC and server."""
BUDGET_SECONDS_PER_TEST = 20.0
"""Wall-clock cap of one fuzz test; examples past it send nothing (normal runs need ~5 s)."""
CALL_TIMEOUT_SECONDS = 5.0
STREAM_WAIT_SECONDS = 1.0
"""How long to wait for a stream's first message: a watch on a quiet task sends nothing
until its next heartbeat, and DEADLINE_EXCEEDED is a defined answer to that."""
MAX_DEPTH = 3
"""Nesting depth of generated messages (the requests nest two levels; outputs go deeper)."""

# Codes a server must never send for client input: UNKNOWN and INTERNAL are defects (or
# grpc.aio's answer to an exception it caught), UNIMPLEMENTED means reflection lied, and
# DATA_LOSS is not in any contract of ours.
UNDEFINED = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DATA_LOSS,
}
# Codes of UNDEFINED that a contract does define for one RPC, with the ErrorInfo reason
# that must come with them: a Write whose bytes do not hash to the declared sha256.
CONTRACT_CODES: dict[str, dict[grpc.StatusCode, str]] = {
    "/agentic.artifacts.v1.ArtifactService/Write": {grpc.StatusCode.DATA_LOSS: "SHA256_MISMATCH"},
}
MAX_STREAM_MESSAGES = 3
"""Requests per call of a client-streaming RPC."""
LEAK = re.compile(r"Traceback|<class |File \"|\b[A-Z][A-Za-z]*(?:Error|Exception)\b")

FUZZ_SETTINGS = settings(
    deadline=None,  # a call's time is the server's, not the strategy's
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=False,
)


# --- what there is to call -------------------------------------------------------------------


def generated_services() -> dict[str, Any]:
    """Every service of the generated code, by full name (importing each ``*_pb2`` module)."""
    services: dict[str, Any] = {}
    for root in map(Path, agentic.__path__):
        for path in sorted(root.rglob("*_pb2.py")):
            module = ".".join(("agentic", *path.relative_to(root).with_suffix("").parts))
            file = importlib.import_module(module).DESCRIPTOR
            services.update(
                {service.full_name: service for service in file.services_by_name.values()}
            )
    return services


def served_services(address: str) -> set[str]:
    """The service names ``address`` lists through reflection (needs no token)."""
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = stub.ServerReflectionInfo(iter([request]), timeout=CALL_TIMEOUT_SECONDS)
        return {s.name for reply in replies for s in reply.list_services_response.service}


def fuzzed_methods(address: str) -> list[MethodDescriptor]:
    """Every method of every generated service that ``address`` serves."""
    generated = generated_services()
    served = {name for name in served_services(address) if name in generated}
    assert served, f"{address} serves none of the generated services"
    return [m for name in sorted(served) for m in generated[name].methods]


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of ``descriptor`` (the one the default pool registered)."""
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


# --- strategies from descriptors ---------------------------------------------------------------
#
# Each field gets two kinds of value. "Plausible" ones follow the field's own protovalidate
# rules as read from its options (uuid, pattern, lengths, bounds, defined enums, required,
# FieldMask `in`), so that whole requests get past validation and reach the domain code and
# the database. "Any" values ignore the rules: NUL and other controls, odd Unicode, lengths
# just past the limits, unknown enum numbers, the extremes of every integer type. A request
# is drawn either all plausible, or field by field from plausible, any and unset: that is
# how one hostile value arrives in an otherwise valid request.


@dataclass
class Harvest:
    """Strings seen in responses, offered back as field values (bounded, newest kept)."""

    values: list[str] = field(default_factory=list)
    limit: int = 64

    def add_from(self, message: Message) -> None:
        """Collect the short non-empty strings anywhere in ``message``."""
        for descriptor, value in message.ListFields():
            if not descriptor.is_repeated:
                items = [value]
            else:
                items = list(value.values() if _is_map(descriptor) else value)
            for item in items:
                if isinstance(item, Message):
                    self.add_from(item)
                elif isinstance(item, str) and 0 < len(item) <= 128 and item not in self.values:
                    self.values.append(item)
                    del self.values[: -self.limit]

    def strategy(
        self, fits: Callable[[str], bool], otherwise: st.SearchStrategy[str]
    ) -> st.SearchStrategy[str]:
        """A harvested value that ``fits``, else one of ``otherwise``.

        The harvest is read at draw time, so values found after the strategy was built count.
        """

        def pick(drawn: tuple[int, str]) -> str:
            fitting = [v for v in self.values if fits(v)]
            return fitting[drawn[0] % len(fitting)] if fitting else drawn[1]

        return st.tuples(st.integers(min_value=0, max_value=1 << 16), otherwise).map(pick)


def _is_map(descriptor: FieldDescriptor) -> bool:
    entry = descriptor.message_type
    return entry is not None and entry.GetOptions().map_entry


def _rules(f: FieldDescriptor) -> validate_pb2.FieldRules:
    options = f.GetOptions()
    if options.HasExtension(validate_pb2.field):
        rules: validate_pb2.FieldRules = options.Extensions[validate_pb2.field]
        return rules
    return validate_pb2.FieldRules()


def _has_rules(slot: Any) -> bool:
    if isinstance(slot, FieldDescriptor):
        return slot.GetOptions().HasExtension(validate_pb2.field)
    return bool(slot.GetOptions().HasExtension(validate_pb2.oneof))


# Characters that break naive code: NUL and the other C0 controls, DEL, C1 controls, line
# and paragraph separators, bidi overrides, a BOM, a non-character, astral code points and
# the metacharacters of SQL LIKE, paths and quoting.
ODD_CHARACTERS = [chr(c) for c in (*range(0x20), 0x7F, 0x85, 0x9F)] + [
    *"\u2028\u2029\u202e\ufeff\uffff\U0001f600\U0010ffff",
    *"'\"\\%_./",
]
# The characters most likely to break storage or logs, NUL first (PostgreSQL refuses it).
SPLICED_CHARACTERS = [
    "\x00",
    "\x00",
    "\x00",
    "\x00",
    "\x01",
    "\x07",
    "\x1b",
    "\x7f",
    "\x85",
    "\u2028",
]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Printable text: what a well-behaved client puts in a free-text field.
PRINTABLE = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))


def any_string(harvest: Harvest) -> st.SearchStrategy[str]:
    """Strings regardless of rules: harvested, hostile, at and past the length limits."""
    hostile = st.text(st.one_of(st.sampled_from(ODD_CHARACTERS), PRINTABLE), max_size=24)
    # One bad character in otherwise good text: the case a validator must catch alone.
    spliced = st.tuples(
        st.text(PRINTABLE, min_size=1, max_size=12),
        st.sampled_from(SPLICED_CHARACTERS),
        st.text(PRINTABLE, max_size=12),
    ).map("".join)
    lengths = st.sampled_from([0, 1, 63, 64, 65, 128, 129, 200, 201, 1024, 1025, 4000, 4001])
    return st.one_of(
        spliced,
        spliced,
        spliced,
        spliced,
        hostile,
        st.text(st.characters(codec="utf-8"), max_size=40),
        lengths.map(lambda n: "x" * n),
        harvest.strategy(lambda _: True, st.just("")),
        st.uuids().map(str),
    )


def plausible_string(rules: validate_pb2.StringRules, harvest: Harvest) -> st.SearchStrategy[str]:
    """Strings that keep ``rules`` (uuid, pattern, min_len/max_len), harvested ones first."""
    low = rules.min_len if rules.HasField("min_len") else 0
    high = rules.max_len if rules.HasField("max_len") else 64
    if rules.uuid:
        fresh = st.uuids(version=4).map(str)
        return st.one_of(harvest.strategy(lambda v: UUID.fullmatch(v) is not None, fresh), fresh)
    if rules.pattern:
        pattern = re.compile(rules.pattern)

        def fits(v: str) -> bool:
            return low <= len(v) <= high and pattern.search(v) is not None

        drawn = st.from_regex(pattern).map(lambda v: v[: min(high, 40)]).filter(fits)
        return st.one_of(harvest.strategy(fits, drawn), drawn)

    def fits_length(v: str) -> bool:
        return low <= len(v) <= high

    text = st.text(PRINTABLE, min_size=max(low, 1), max_size=max(min(high, 40), low, 1))
    return st.one_of(harvest.strategy(fits_length, text), text)


def _ints(bits: int, signed: bool) -> st.SearchStrategy[int]:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return st.one_of(
        st.sampled_from([low, high, -1 if signed else 0, 0, 1]), st.integers(low, high)
    )


def plausible_int(rules: Any, bits: int, signed: bool) -> st.SearchStrategy[int]:
    """Integers within ``rules``' bounds (gt/gte/lt/lte), biased to the small end."""
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    low = rules.gte if rules.HasField("gte") else rules.gt + 1 if rules.HasField("gt") else low
    high = rules.lte if rules.HasField("lte") else rules.lt - 1 if rules.HasField("lt") else high
    small = st.integers(low, min(high, max(low, 0) + 10))
    return st.one_of(small, small, st.integers(low, high))


_SCALARS: dict[int, tuple[str, int, bool]] = {
    FieldDescriptor.TYPE_INT32: ("int32", 32, True),
    FieldDescriptor.TYPE_SINT32: ("sint32", 32, True),
    FieldDescriptor.TYPE_SFIXED32: ("sfixed32", 32, True),
    FieldDescriptor.TYPE_INT64: ("int64", 64, True),
    FieldDescriptor.TYPE_SINT64: ("sint64", 64, True),
    FieldDescriptor.TYPE_SFIXED64: ("sfixed64", 64, True),
    FieldDescriptor.TYPE_UINT32: ("uint32", 32, False),
    FieldDescriptor.TYPE_FIXED32: ("fixed32", 32, False),
    FieldDescriptor.TYPE_UINT64: ("uint64", 64, False),
    FieldDescriptor.TYPE_FIXED64: ("fixed64", 64, False),
}


Mode = Literal["plausible", "one_bad", "wild"]


@dataclass
class Messages:
    """Builds a strategy for any message from its descriptor (see the section comment)."""

    harvest: Harvest

    def of(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        """Requests of type ``descriptor``: plausible, plausible but for one field, or wild."""
        return st.one_of(
            self.build(descriptor, depth, "plausible"),
            self.build(descriptor, depth, "one_bad"),
            self.build(descriptor, depth, "one_bad"),
            self.build(descriptor, depth, "one_bad"),
            self.build(descriptor, depth, "wild"),
        )

    def build(self, descriptor: Descriptor, depth: int, mode: Mode) -> st.SearchStrategy[Message]:
        """Messages of type ``descriptor`` in ``mode``, one member per oneof at most.

        ``one_bad`` picks one slot (a field, or a oneof) to draw regardless of its rules, or
        to leave unset; a message field picked that way is itself plausible but for one slot.
        """
        cls = message_class(descriptor)
        slots: list[Any] = [f for f in descriptor.fields if f.containing_oneof is None]
        slots += list(descriptor.oneofs)
        if depth >= MAX_DEPTH or not slots:
            return st.just(cls())

        def assemble(values: list[Any]) -> Message:
            fields: dict[str, Any] = {}
            for slot, value in zip(slots, values, strict=True):
                if value is None:
                    continue
                if isinstance(slot, FieldDescriptor):
                    fields[slot.name] = value
                else:  # a oneof: (member name, value)
                    fields[value[0]] = value[1]
            return cls(**fields)

        def slot_values(bad: int | None) -> st.SearchStrategy[Message]:
            parts = [
                self.slot(
                    slot, depth, mode if bad is None else "one_bad" if i == bad else "plausible"
                )
                for i, slot in enumerate(slots)
            ]
            return st.tuples(*parts).map(lambda values: assemble(list(values)))

        if mode == "one_bad":
            # Fields with rules are picked twice as often: they are what the server reads
            # (the others are mostly output-only), so that is where bad values must be caught.
            ruled = [i for i, slot in enumerate(slots) if _has_rules(slot)]
            # Text fields with rules once more: free text is where a NUL or a control
            # character slips through to storage (PostgreSQL refuses NUL at the INSERT).
            texts = [
                i
                for i in ruled
                if isinstance(slots[i], FieldDescriptor)
                and slots[i].type == FieldDescriptor.TYPE_STRING
                and not _rules(slots[i]).string.uuid
            ]
            return st.sampled_from([*range(len(slots)), *ruled, *texts, *texts]).flatmap(
                slot_values
            )
        return slot_values(None)

    def slot(self, slot: Any, depth: int, mode: Mode) -> st.SearchStrategy[Any]:
        """A value for one slot of a message (None: unset), in ``mode``."""
        if not isinstance(slot, FieldDescriptor):  # a oneof
            plausible = mode == "plausible"
            members = [
                st.tuples(st.just(f.name), self.value(f, depth, plausible)) for f in slot.fields
            ]
            required = slot.GetOptions().Extensions[validate_pb2.oneof].required
            if plausible and required:
                return st.one_of(*members)
            return st.one_of(st.none(), *members)
        f: FieldDescriptor = slot
        rules = _rules(f)
        if mode == "plausible":
            # Required fields are set; others mostly, since many rules refuse the zero value
            # (a uuid field) while for others unset is what gets a call through (an etag).
            strategy = self.value(f, depth, True)
            return strategy if rules.required else st.one_of(strategy, strategy, st.none())
        if mode == "one_bad":
            nested = f.message_type
            mask = field_mask_pb2.FieldMask.DESCRIPTOR.full_name
            if nested is not None and not f.is_repeated and nested.full_name != mask:
                # Descend: the field itself is unset often enough in wild mode.
                return self.build(nested, depth + 1, "one_bad")
            return st.one_of(self.value(f, depth, False), st.none())
        return st.one_of(  # wild: field by field
            st.none(),
            self.value(f, depth, True),
            self.value(f, depth, True),
            self.value(f, depth, False),
        )

    def value(self, f: FieldDescriptor, depth: int, plausible: bool) -> st.SearchStrategy[Any]:
        """A value for field ``f`` as the message constructor takes it."""
        if _is_map(f):
            entry = f.message_type
            assert entry is not None
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            return st.dictionaries(
                self.single(key, depth, plausible), self.single(value, depth, plausible), max_size=3
            )
        if f.is_repeated:
            rules = _rules(f).repeated
            if plausible:
                low = rules.min_items
                high = rules.max_items if rules.HasField("max_items") else 4
                return st.lists(
                    self.single(f, depth, True, rules.items),
                    min_size=low,
                    max_size=max(low, min(high, 4)),
                    unique=rules.unique,
                )
            return st.lists(self.single(f, depth, False), max_size=4)
        return self.single(f, depth, plausible)

    def single(
        self,
        f: FieldDescriptor,
        depth: int,
        plausible: bool,
        rules: validate_pb2.FieldRules | None = None,
    ) -> st.SearchStrategy[Any]:
        """One element of field ``f``; ``rules`` are the items' rules of a repeated field."""
        rules = rules if rules is not None else _rules(f)
        if f.type == FieldDescriptor.TYPE_STRING:
            return (
                plausible_string(rules.string, self.harvest)
                if plausible
                else any_string(self.harvest)
            )
        if f.type == FieldDescriptor.TYPE_BYTES:
            low = rules.bytes.min_len if plausible else 0
            return st.binary(min_size=low, max_size=max(low, 64))
        if f.type == FieldDescriptor.TYPE_BOOL:
            const = rules.bool.HasField("const")
            return st.just(rules.bool.const) if plausible and const else st.booleans()
        if f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            width: Literal[32, 64] = 32 if f.type == FieldDescriptor.TYPE_FLOAT else 64
            return st.floats(width=width, allow_nan=not plausible, allow_infinity=not plausible)
        if f.type == FieldDescriptor.TYPE_ENUM:
            assert f.enum_type is not None
            defined = st.sampled_from([v.number for v in f.enum_type.values])
            if plausible or f.enum_type.is_closed:  # closed enums refuse unknown numbers
                return defined
            return st.one_of(defined, _ints(32, True))
        if f.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            assert f.message_type is not None
            if f.message_type.full_name == field_mask_pb2.FieldMask.DESCRIPTOR.full_name:
                return self.mask(f, rules, plausible)
            return self.build(f.message_type, depth + 1, "plausible" if plausible else "wild")
        name, bits, signed = _SCALARS[f.type]
        if plausible and rules.WhichOneof("type") == name:
            return plausible_int(getattr(rules, name), bits, signed)
        return _ints(bits, signed)

    def mask(
        self, f: FieldDescriptor, rules: validate_pb2.FieldRules, plausible: bool
    ) -> st.SearchStrategy[Message]:
        """FieldMasks: the rule's ``in`` paths, or the resource's field names and sub-paths."""
        allowed = list(rules.field_mask.__getattribute__("in"))
        if plausible and allowed:
            subset = st.lists(
                st.sampled_from(allowed), min_size=1, max_size=len(allowed), unique=True
            )
            return subset.map(lambda p: field_mask_pb2.FieldMask(paths=p))
        names: set[str] = set()
        assert f.containing_type is not None
        for sibling in f.containing_type.fields:
            if sibling.message_type is not None and sibling is not f:
                names.update(sibling.message_type.fields_by_name)
        real = sorted(names) or ["name"]
        sub = st.tuples(st.sampled_from(real), st.sampled_from(["", "x", "first", "seconds"]))
        path = st.one_of(
            st.sampled_from(real),
            sub.map(lambda parts: f"{parts[0]}.{parts[1]}"),
            any_string(self.harvest),
        )
        return st.lists(path, max_size=4).map(lambda p: field_mask_pb2.FieldMask(paths=p))


def mutated(serialized: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Serialized messages cut short, with a byte flipped, or with bytes spliced in."""

    def mutate(args: tuple[bytes, int, int, bytes]) -> bytes:
        data, how, at, extra = args
        at = at % (len(data) + 1)
        if how == 0:
            return data[:at]
        if how == 1 and data:
            i = at % len(data)
            return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        return data[:at] + extra + data[at:]

    return st.tuples(
        serialized, st.integers(0, 2), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)
    ).map(mutate)


# Balanced start/end groups of unknown field 15, nested past every parser's limit (100).
DEEP_GROUPS = b"\x7b" * 2000 + b"\x7c" * 2000


# --- calling ---------------------------------------------------------------------------------


@dataclass
class Target:
    """A server under test and the credentials to call it with."""

    service: Service
    channel: grpc.Channel
    harvest: Harvest = field(default_factory=Harvest)

    @property
    def address(self) -> str:
        """host:port of the server."""
        return self.service.address


ADMIN_TOKEN = bearer(token())
NON_ADMIN_TOKENS = [
    bearer(token("fuzz-member", roles))
    for roles in ((Role.PROJECT_MANAGER,), (Role.TECHNICAL_LEAD,), (Role.SUPPORT_ENGINEER,), ())
]
# Three in four calls as Administrator (they get furthest), the rest as someone else.
TOKENS = st.sampled_from([ADMIN_TOKEN, ADMIN_TOKEN, ADMIN_TOKEN, None]).flatmap(
    lambda t: st.just(t) if t is not None else st.sampled_from(NON_ADMIN_TOKENS)
)


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def call(
    target: Target, method: MethodDescriptor, request: bytes | list[bytes], authorization: str
) -> Message | None:
    """Send ``request`` bytes to ``method`` (a list: the messages of a client stream); the
    first response, or None; raises RpcError.

    A server stream is read up to its first message and then cancelled by us.
    """
    decode = message_class(method.output_type).FromString
    metadata = (("authorization", authorization),)
    path = _path(method)
    if method.client_streaming:
        messages = request if isinstance(request, list) else [request]
        sent: Message = target.channel.stream_unary(path, response_deserializer=decode)(
            iter(messages), metadata=metadata, timeout=CALL_TIMEOUT_SECONDS
        )
        return sent
    assert isinstance(request, bytes), f"{path} takes one request"
    if method.server_streaming:
        stream = target.channel.unary_stream(path, response_deserializer=decode)(
            request, metadata=metadata, timeout=STREAM_WAIT_SECONDS
        )
        try:
            return next(iter(stream), None)
        finally:
            stream.cancel()
    reply: Message = target.channel.unary_unary(path, response_deserializer=decode)(
        request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS
    )
    return reply


def assert_defined(method: MethodDescriptor, error: grpc.RpcError) -> None:
    """The failure is a defined code whose status carries nothing internal."""
    code = error.code()
    message = error.details() or ""
    where = _path(method)
    status = rpc_status.from_call(error)
    defined = CONTRACT_CODES.get(where, {})
    if code in defined:
        reasons = [
            info.reason
            for detail in (status.details if status is not None else ())
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)
            for info in [_unpack_error_info(detail)]
        ]
        assert reasons == [defined[code]], f"{where} answered {code.name} for {reasons}"
    else:
        assert code not in UNDEFINED, f"{where} answered {code.name}: {message!r}"
    texts = [message]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            texts += [v.description for v in bad.field_violations]
    for text in texts:
        assert not LEAK.search(text), f"{where} leaked internals in {code.name}: {text!r}"


def _unpack_error_info(detail: Any) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    detail.Unpack(info)
    return info


def exercise(
    target: Target, method: MethodDescriptor, request: bytes | list[bytes], authorization: str
) -> None:
    """One call: OK (its strings harvested) or a defined error."""
    try:
        reply = call(target, method, request, authorization)
    except grpc.RpcError as error:
        assert_defined(method, error)
    else:
        if reply is not None:
            target.harvest.add_from(reply)


T = TypeVar("T")


def _per_call(
    method: MethodDescriptor, one: st.SearchStrategy[T]
) -> st.SearchStrategy[T | list[T]]:
    """What one call sends: one request, or for a client stream one to a few of them."""
    if not method.client_streaming:
        return one
    return st.lists(one, min_size=1, max_size=MAX_STREAM_MESSAGES)


def fuzz_fields(target: Target, method: MethodDescriptor, deadline: float) -> None:
    """Hypothesis over the field values of ``method``'s request."""
    requests = Messages(target.harvest).of(method.input_type)

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES_PER_RPC)
    @given(request=_per_call(method, requests), authorization=TOKENS)
    def run(request: Message | list[Message], authorization: str) -> None:
        if time.monotonic() < deadline:
            sent = (
                [m.SerializeToString() for m in request]
                if isinstance(request, list)
                else request.SerializeToString()
            )
            exercise(target, method, sent, authorization)

    run()


def fuzz_raw(target: Target, method: MethodDescriptor, deadline: float) -> None:
    """Hypothesis over arbitrary and mutated request bytes of ``method``."""
    valid = Messages(target.harvest).of(method.input_type).map(lambda m: m.SerializeToString())
    data = st.one_of(st.binary(max_size=256), mutated(valid), st.just(DEEP_GROUPS))

    @settings(FUZZ_SETTINGS, max_examples=RAW_EXAMPLES_PER_RPC)
    @given(request=_per_call(method, data), authorization=TOKENS)
    def run(request: bytes | list[bytes], authorization: str) -> None:
        if time.monotonic() < deadline:
            exercise(target, method, request, authorization)

    run()


def fuzz(target: Target, each: Callable[[Target, MethodDescriptor, float], None]) -> None:
    """Run ``each`` for every method ``target`` serves; the server must stay SERVING."""
    deadline = time.monotonic() + BUDGET_SECONDS_PER_TEST
    methods = fuzzed_methods(target.address)
    for method in methods:
        # An empty request first: harmless, and its answer seeds the harvest.
        exercise(target, method, b"", ADMIN_TOKEN)
    for method in methods:
        each(target, method, deadline)
    assert target.service.process.poll() is None, target.service.log()
    assert health_status(target.address) == "SERVING"


# --- the servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """A private API server per backend: fuzzed rows must not reach other tests' listings."""
    workdir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with fresh_database(request.param, workdir, "fuzz") as url:
        env = {
            "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
            "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
            "DATABASE_URL": url,
            "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
            "AGENTIC_CACHE_ADDRESS": "",
            **SERVICE_ACCOUNT_LIMITS,
        }
        service = start_service("server", env, workdir / "api")
        channel = grpc.insecure_channel(service.address)
        try:
            target = Target(service, channel)
            seed_artifacts(target)
            yield target
        finally:
            channel.close()
            code = service.stop()
            assert code == 0, f"server exited with {code} on SIGTERM:\n{service.log()}"


def seed_artifacts(target: Target) -> None:
    """Rows for fuzzed requests to reach: a project with two open uploads (one declaring the
    sha256 of no bytes) and a READY artifact, their ids, upload names and the artifact's
    resource name in the harvest.

    Without them an artifact RPC almost never gets past NOT_FOUND: a fuzzed CreateUpload
    rarely keeps every rule at once, and Write needs the name of an open upload.
    """
    admin = (("authorization", ADMIN_TOKEN),)
    project = projects_pb2_grpc.ProjectServiceStub(target.channel).CreateProject(
        projects_pb2.CreateProjectRequest(project=projects_pb2.Project(name="fuzz-artifacts")),
        metadata=admin,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    target.harvest.add_from(project)
    stub = artifacts_pb2_grpc.ArtifactServiceStub(target.channel)
    for name, sha256 in (("open", ""), ("empty", hashlib.sha256(b"").hexdigest()), ("ready", "")):
        created = stub.CreateUpload(
            artifacts_pb2.CreateUploadRequest(
                project_id=project.project.id,
                name=name,
                kind=artifacts_pb2.ARTIFACT_KIND_DATASET,
                format=artifacts_pb2.DATASET_FORMAT_CSV,
                sha256=sha256,
            ),
            metadata=admin,
            timeout=CALL_TIMEOUT_SECONDS,
        )
        target.harvest.add_from(created)
        if name == "ready":
            done = artifacts_pb2.WriteRequest(
                resource_name=created.upload_name, data=b"a,b\n", finish_write=True
            )
            stub.Write(iter([done]), metadata=admin, timeout=CALL_TIMEOUT_SECONDS)
            # Read names an artifact as a resource, which no response spells out.
            target.harvest.values.append(f"artifacts/{created.artifact.id}")


@pytest.fixture(scope="module")
def sidecar_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A cache sidecar on a private memcached."""
    workdir = tmp_path_factory.mktemp("fuzz-cache")
    policy = workdir / "policy.toml"
    policy.write_text(TEST_POLICY)
    memcached = Memcached(free_port(), workdir / "memcached.log")
    memcached.start()
    try:
        service = start_sidecar(workdir / "sidecar", [memcached], policy)
        channel = grpc.insecure_channel(service.address)
        try:
            yield Target(service, channel)
        finally:
            channel.close()
            code = service.stop()
            assert code == 0, f"sidecar exited with {code} on SIGTERM:\n{service.log()}"
    finally:
        memcached.stop()


# --- the properties ----------------------------------------------------------------------------


def test_every_service_is_fuzzed(api_target: Target, sidecar_target: Target) -> None:
    """Each generated service is served by one of the fuzzed servers."""
    served = served_services(api_target.address) | served_services(sidecar_target.address)
    missing = set(generated_services()) - served
    assert not missing, f"generated services no fuzzed server serves: {sorted(missing)}"


def test_api_field_values(api_target: Target) -> None:
    fuzz(api_target, fuzz_fields)


def test_api_raw_bytes(api_target: Target) -> None:
    fuzz(api_target, fuzz_raw)


def test_cache_field_values(sidecar_target: Target) -> None:
    fuzz(sidecar_target, fuzz_fields)


def test_cache_raw_bytes(sidecar_target: Target) -> None:
    fuzz(sidecar_target, fuzz_raw)

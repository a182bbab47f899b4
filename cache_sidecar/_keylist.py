"""ListKeys: the keys of a namespace's current generation, from Memcached's key dump.

Memcached cannot list keys by prefix; ``lru_crawler metadump all`` streams one line per
item of the whole node (``key=<uri-encoded key> exp=<unix|-1> la=<unix> ... size=<n>``,
LF-terminated, then ``END`` CRLF; on a connection of its own, since Memcached refuses
a metadump pipelined after other commands). So each page re-dumps the node it starts
on and keeps, in a bounded heap, only the ``page_size + 1`` smallest tokens after the
page token's that belong to the namespace's *current* generation on that node (older
generations are garbage waiting for expiry or eviction, never served again). Memory is
O(page_size) whatever the node holds; time is one pass over the node per page, which is
why this is an operator RPC.

Keys come back as the callers' keys: a raw token is the caller's key itself; a ``#``
token is a SHA-256 digest of a key that was unprintable or too long (see _keys.py) and
is returned as is, flagged ``hashed``. Values are never read. Lease placeholders and
cached "not found" entries are items of the namespace too and are listed like values.

Pages run node by node in configuration order, tokens in byte order within a node. The
page token (opaque to callers) is base64 of ``namespace``, the node index and the last
token returned; a token of another namespace, or not ours, is INVALID_PAGE_TOKEN.
Nodes that are quarantined or whose breaker is open are skipped: they serve nothing.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

from cache_sidecar._errors import InvalidPageToken, KeyDumpFailed
from cache_sidecar._nodes import Node, NodeDown
from cache_sidecar._store import Store

__all__ = ["DEFAULT_PAGE_SIZE", "KeyPage", "ListedKey", "list_keys"]

DEFAULT_PAGE_SIZE = 100
_HASH_MARK = "#"
_READ_CHUNK_BYTES = 64 * 1024
# A dump line is ~100 bytes plus the key (at most 250 bytes, uri-encoded at most 750).
_MAX_LINE_BYTES = 4096
# "BUSY" means another crawl runs on the node right now; the dump is refused, not queued.
_BUSY = b"BUSY"


@dataclass(frozen=True, slots=True)
class ListedKey:
    """One item of the namespace: the caller's key (or digest token) and its metadata."""

    key: bytes
    hashed: bool
    node: str
    size_bytes: int
    expire_unix_seconds: int
    """0 for an item without expiry."""
    last_access_unix_seconds: int


@dataclass(frozen=True, slots=True)
class KeyPage:
    """One page of keys and the token of the next ("" when this is the last)."""

    keys: list[ListedKey]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class _Item:
    token: str
    size_bytes: int
    expire_unix_seconds: int
    last_access_unix_seconds: int


def list_keys(store: Store, namespace: str, page_size: int, page_token: str) -> KeyPage:
    """Return one page of the namespace's keys (blocking: run it in the I/O pool)."""
    size = page_size or DEFAULT_PAGE_SIZE
    start, after = _decode_token(page_token, namespace, len(store.nodes))
    keys: list[ListedKey] = []
    for index in range(start, len(store.nodes)):
        node = store.nodes[index]
        remaining = size - len(keys)
        if not node.available():
            after = ""
            continue
        items = _smallest_after(store, node, namespace, after if index == start else "", remaining)
        keys.extend(_listed(item, node.address) for item in items[:remaining])
        if len(items) > remaining:
            return KeyPage(keys, _pack(namespace, index, keys[-1].key.decode("ascii")))
        if len(keys) == size and index + 1 < len(store.nodes):
            # Full at a node's end: the next page starts on the next node.
            return KeyPage(keys, _pack(namespace, index + 1, ""))
    return KeyPage(keys, "")


def _smallest_after(
    store: Store, node: Node, namespace: str, after: str, count: int
) -> list[_Item]:
    try:
        generation = store.generation_on(node, namespace)
    except NodeDown as exc:
        raise KeyDumpFailed(node.address, "generation unreadable") from exc
    prefix = f"{store.key_prefix}:{namespace}:{generation}:"
    wanted = (
        item
        for item in _dump(node.address, store.connect_timeout_seconds, store.timeout_seconds)
        if item.token.startswith(prefix)
    )
    trimmed = (
        _Item(
            i.token[len(prefix) :], i.size_bytes, i.expire_unix_seconds, i.last_access_unix_seconds
        )
        for i in wanted
    )
    # nsmallest keeps a heap of count + 1 items: memory bounded by the page, not the node.
    return heapq.nsmallest(
        count + 1, (i for i in trimmed if i.token > after), key=lambda i: i.token
    )


def _listed(item: _Item, address: str) -> ListedKey:
    return ListedKey(
        key=item.token.encode("ascii"),
        hashed=item.token.startswith(_HASH_MARK),
        node=address,
        size_bytes=item.size_bytes,
        expire_unix_seconds=item.expire_unix_seconds,
        last_access_unix_seconds=item.last_access_unix_seconds,
    )


def _dump(address: str, connect_timeout: float, timeout: float) -> Iterator[_Item]:
    """Stream ``lru_crawler metadump all`` of one node as items (full Memcached keys)."""
    host, _, port = address.rpartition(":")
    try:
        sock = socket.create_connection((host, int(port)), timeout=connect_timeout)
    except OSError as exc:
        raise KeyDumpFailed(address, str(exc)) from exc
    with sock:
        sock.settimeout(timeout)
        try:
            sock.sendall(b"lru_crawler metadump all\r\n")
            pending = b""
            while True:  # bounded: the node's item count, then END (or a timeout)
                chunk = sock.recv(_READ_CHUNK_BYTES)
                if not chunk:
                    raise KeyDumpFailed(address, "connection closed before END")
                pending += chunk
                # Item lines end in LF, the final END in CRLF.
                *lines, pending = pending.split(b"\n")
                if len(pending) > _MAX_LINE_BYTES:
                    raise KeyDumpFailed(address, "unparsable dump line")
                for raw_line in lines:
                    line = raw_line.rstrip(b"\r")
                    if line == b"END":
                        return
                    if line.startswith(_BUSY) or line.startswith(b"ERROR"):
                        raise KeyDumpFailed(address, line.decode("ascii", "replace"))
                    item = _parse(line)
                    if item is not None:
                        yield item
        except OSError as exc:
            raise KeyDumpFailed(address, str(exc)) from exc


def _parse(line: bytes) -> _Item | None:
    fields = dict(part.split(b"=", 1) for part in line.split(b" ") if b"=" in part)
    raw = fields.get(b"key")
    if raw is None:
        return None
    try:
        key = urllib.parse.unquote_to_bytes(raw).decode("ascii")
        expire = int(fields.get(b"exp", b"0"))
        return _Item(
            token=key,
            size_bytes=int(fields.get(b"size", b"0")),
            expire_unix_seconds=max(0, expire),  # -1: no expiry
            last_access_unix_seconds=int(fields.get(b"la", b"0")),
        )
    except (UnicodeDecodeError, ValueError):
        return None  # not a key this sidecar wrote (ours are ASCII)


def _pack(namespace: str, node: int, after: str) -> str:
    """The page token: where the next page starts (node index, after this token)."""
    body = {"ns": namespace, "n": node, "a": after}
    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(data).decode("ascii")


def _decode_token(token: str, namespace: str, nodes: int) -> tuple[int, str]:
    """(node index, last token) of a page token; (0, "") for the first page."""
    if not token:
        return 0, ""
    try:
        body = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidPageToken() from None
    if (
        not isinstance(body, dict)
        or body.get("ns") != namespace
        or not isinstance(body.get("n"), int)
        or isinstance(body.get("n"), bool)
        or not 0 <= body["n"] < nodes
        or not isinstance(body.get("a"), str)
    ):
        raise InvalidPageToken()
    return body["n"], body["a"]

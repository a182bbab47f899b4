"""Randomized race harness: slow fills against updates never leave a stale read behind.

The origin is a dict of versions. An update bumps a key's version, then invalidates it
(or, sometimes, its whole namespace) through a random sidecar; only when that call has
returned is the version *committed*. Readers (through random sidecars) record the
committed version when they start; reading anything older afterwards is a stale read.
Loaders read the origin and then stall for a random while before the fill, so fills
routinely arrive after the invalidation of the version they loaded.
"""

from __future__ import annotations

import asyncio
import random
import time

from core.cache import CacheClient
from devtools.memcached import Memcached
from tests.cache_sidecar._support import SidecarFactory, run

NAMESPACE = "race"
KEYS = 25
ROUNDS = 90  # KEYS * ROUNDS = 2,250 update/read interleavings
READERS_PER_ROUND = 4
MAX_DELAY_SECONDS = 0.004


def test_no_read_returns_a_version_older_than_a_finished_invalidation(
    memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    sidecars = [sidecar_factory([memcached]), sidecar_factory([memcached])]
    rng = random.Random(20240611)
    origin = {f"key-{i}".encode(): 0 for i in range(KEYS)}
    committed = dict(origin)
    stale: list[tuple[bytes, int, int]] = []
    rejected: list[int] = []
    reads = 0

    async def scenario() -> None:
        clients = [CacheClient.connect(s.address, timeout_seconds=5) for s in sidecars]

        async def pause() -> None:
            await asyncio.sleep(rng.uniform(0, MAX_DELAY_SECONDS))

        async def read(key: bytes) -> None:
            nonlocal reads
            await pause()
            floor = committed[key]

            async def loader() -> bytes:
                version = origin[key]
                await pause()  # the slow part of a fill: after reading the origin
                return b"%d" % version

            value = await rng.choice(clients).read_through(NAMESPACE, key, loader)
            assert value is not None
            reads += 1
            if int(value) < floor:
                stale.append((key, int(value), floor))

        async def update(key: bytes) -> None:
            await pause()
            origin[key] += 1
            version = origin[key]
            client = rng.choice(clients)
            if rng.random() < 0.1:
                await client.invalidate_namespace(NAMESPACE)
            else:
                await client.invalidate(NAMESPACE, [key])
            committed[key] = max(committed[key], version)

        async def rounds(key: bytes) -> None:
            for _ in range(ROUNDS):
                await asyncio.gather(update(key), *(read(key) for _ in range(READERS_PER_ROUND)))
                await read(key)  # strictly after this round's invalidation

        try:
            await asyncio.gather(*(rounds(key) for key in origin))
            for client in clients:
                stats = await client.stats()
                race = next(ns for ns in stats.namespaces if ns.namespace == NAMESPACE)
                rejected.append(race.stale_set_rejections)
        finally:
            for client in clients:
                await client.close()

    started = time.monotonic()
    run(scenario(), timeout=100)
    assert stale == [], f"{len(stale)} stale reads, e.g. {stale[:5]}"
    assert reads == KEYS * ROUNDS * (READERS_PER_ROUND + 1)
    assert sum(rejected) > 0, "no fill ever raced an invalidation: the harness tests nothing"
    assert time.monotonic() - started < 90

"""The profile's statistics statements (``workers._profile_sql``) on small tables in
DuckDB, against plain-Python references: the grouped quantiles against nearest rank and
``quantile_disc``, the exact integer moments against ``statistics``."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from tests.workers._quiet import QuietContext
from workers import _profile_sql as sql
from workers._duckdb import Engine


@pytest.fixture
def engine() -> Iterator[Engine]:
    context: Any = QuietContext("unit", 256, 2)
    with Engine(context) as e:
        yield e


def _load(engine: Engine, values: list[int | None]) -> sql.Column:
    connection = engine.connection
    connection.execute(f"CREATE OR REPLACE TEMP TABLE {sql.TABLE} (x BIGINT)")
    connection.executemany(f"INSERT INTO {sql.TABLE} VALUES (?)", [[v] for v in values])
    (column,) = [c for c in sql.table_columns(engine) if c.name == "x"]
    return column


def _nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


@pytest.mark.parametrize("seed", range(6))
def test_grouped_quantiles_are_the_nearest_rank_values(engine: Engine, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(4 * 18, 400)  # 18 possible values: few enough groups
    values = [rng.randint(-5, 12) for _ in range(n)] + [None] * rng.randint(0, 5)
    column = _load(engine, values)
    present = [v for v in values if v is not None]
    groups = sql.groups(engine, column, len(present), 3, (0.0, 1.0), quantiles=True)
    assert groups.quantiles is not None, "few groups: quantiles come from them"
    assert groups.quantiles == [_nearest_rank(present, q) for q in sql.QUANTILES]
    disc = engine.connection.execute(
        f"SELECT quantile_disc(x, {list(sql.QUANTILES)}) FROM {sql.TABLE}"
    ).fetchall()[0][0]
    assert groups.quantiles == disc, "the same values quantile_disc picks"
    assert groups.distinct == len(set(present))
    counts = sorted((-present.count(v), v) for v in set(present))[:3]
    assert groups.top == [(v, -c) for c, v in counts]


def test_many_groups_leave_quantiles_to_quantile_disc(engine: Engine) -> None:
    values: list[int | None] = list(range(100))
    column = _load(engine, values)
    groups = sql.groups(engine, column, 100, 2, (0.0, 1.0), quantiles=True)
    assert groups.quantiles is None
    assert groups.distinct == 100
    assert groups.top == [(0, 1), (1, 1)]


def test_integer_moments_are_exact_and_overflow_falls_back(engine: Engine) -> None:
    rng = random.Random(7)
    values: list[int | None] = [rng.randint(-(10**12), 10**12) for _ in range(500)] + [None]
    column = _load(engine, values)
    present = [v for v in values if v is not None]
    (m,) = sql.moments(engine, [column], (0.0, 1.0)).values()
    assert m.mean == float(statistics.mean(present))  # Fraction mean, correctly rounded
    assert m.stddev == pytest.approx(statistics.stdev(present), rel=1e-15)
    # Squares beyond HUGEINT: the float path on one thread answers instead of an error.
    big: list[int | None] = [2**63 - 1, 2**63 - 2, 2**63 - 5, -(2**63) + 1]
    column = _load(engine, big)
    with pytest.raises(duckdb.OutOfRangeException):  # the exact sums do overflow here
        engine.connection.execute(f"SELECT sum(x::HUGEINT * x::HUGEINT) FROM {sql.TABLE}")
    (m,) = sql.moments(engine, [column], (0.0, 1.0)).values()
    present = [v for v in big if v is not None]
    assert m.mean == pytest.approx(statistics.mean(present), rel=1e-12)
    assert m.stddev == pytest.approx(statistics.stdev(present), rel=1e-12)

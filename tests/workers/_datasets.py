"""Datasets for tests and benchmarks: a pyarrow table of known distributions, and writers.

``known_table(rows, seed)`` draws a table whose every column follows a stated law (see
``COLUMNS``), from Python's own seeded ``random`` (no engine of the code under test is
involved in making the data). ``write(table, path, fmt)`` writes it as CSV with a header,
Parquet, or JSON lines, each read back to the same values:

- CSV: pyarrow's writer (empty cell for NULL, ``true``/``false``, ISO dates and
  timestamps);
- Parquet: pyarrow's writer, types kept;
- JSON lines: one object per row by ``json.dumps`` (null for NULL, dates and timestamps as
  ISO strings, floats by ``repr`` so they read back to the same double).

Any table goes through ``write``: tests of other kinds build their own tables and reuse it.
"""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

# pyarrow ships no type information.
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

__all__ = ["CATEGORIES", "COLUMNS", "known_table", "rows_for_bytes", "write"]

CATEGORIES = tuple(f"cat-{index:02d}" for index in range(20))
"""The category column's values; value i is drawn with weight 1 / (i + 1)."""

COLUMNS = {
    "id": "int64: 0, 1, 2, ... (unique)",
    "category": "string: one of CATEGORIES with weights 1/(i+1), 3% NULL",
    "amount": "float64: normal(100, 15) rounded to 4 decimals, 5% NULL",
    "quantity": "int64: uniform 0..999",
    "created": "timestamp[us]: uniform second in 2024 (UTC, no zone)",
    "day": "date32: uniform day of 2020..2024",
    "flag": "bool: true with p = 0.3, 1% NULL",
    "note": "string: 'note <id mod 9973>'",
}
_BYTES_PER_ROW = 83  # of the CSV, measured: sizes a file from a target size
_YEAR_SECONDS = 366 * 86400
_FIRST_DAY = date(2020, 1, 1)
_DAYS = (date(2025, 1, 1) - _FIRST_DAY).days
_START = datetime(2024, 1, 1)


def rows_for_bytes(size_bytes: int) -> int:
    """Rows of ``known_table`` whose CSV is about ``size_bytes`` long."""
    return max(1, size_bytes // _BYTES_PER_ROW)


def known_table(rows: int, seed: int = 12) -> pa.Table:
    """``rows`` rows drawn as ``COLUMNS`` says, the same for the same seed."""
    rng = random.Random(seed)
    weights = [1 / (index + 1) for index in range(len(CATEGORIES))]
    category = [
        None if rng.random() < 0.03 else value
        for value in rng.choices(CATEGORIES, weights=weights, k=rows)
    ]
    amount = [
        None if rng.random() < 0.05 else round(rng.gauss(100.0, 15.0), 4) for _ in range(rows)
    ]
    flag = [None if rng.random() < 0.01 else rng.random() < 0.3 for _ in range(rows)]
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "category": pa.array(category, pa.string()),
            "amount": pa.array(amount, pa.float64()),
            "quantity": pa.array([rng.randrange(1000) for _ in range(rows)], pa.int64()),
            "created": pa.array(
                [_START + timedelta(seconds=rng.randrange(_YEAR_SECONDS)) for _ in range(rows)],
                pa.timestamp("us"),
            ),
            "day": pa.array(
                [_FIRST_DAY + timedelta(days=rng.randrange(_DAYS)) for _ in range(rows)],
                pa.date32(),
            ),
            "flag": pa.array(flag, pa.bool_()),
            "note": pa.array([f"note {index % 9973}" for index in range(rows)], pa.string()),
        }
    )


def _json_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def write(table: pa.Table, path: Path, fmt: str) -> Path:
    """Write ``table`` to ``path`` as ``fmt`` (``csv``, ``parquet`` or ``jsonl``); the path."""
    if fmt == "csv":
        pacsv.write_csv(table, path)
    elif fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "jsonl":
        with path.open("w", encoding="utf-8") as out:
            for batch in table.to_batches(max_chunksize=65536):
                for row in batch.to_pylist():
                    out.write(json.dumps({k: _json_cell(v) for k, v in row.items()}) + "\n")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return path

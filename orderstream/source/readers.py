"""Read CSV, JSON Lines and Parquet files in bounded chunks of rows.

The contract's fields are kept as given: numbers and booleans become their text, so
validation (not loading) judges them. Extra columns keep their JSON value where the file has
types (JSON Lines and Parquet: booleans, numbers, objects, lists), so the messages carry them
as they were; CSV cells are text. A file that cannot be read raises UserError and yields
nothing that the caller may already have used: callers load a file in one transaction.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pandas as pd

from orderstream.errors import UserError
from orderstream.source.fields import EVENT_FIELDS

CHUNK_ROWS = 50_000
CONTRACT_FIELDS = frozenset(EVENT_FIELDS)
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


def as_text(value: object) -> str | None:
    """A loaded value as the text the repository keeps; None for missing."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return None if value != value else repr(value)  # NaN is pandas' missing
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def json_value(value: object) -> object:
    """An extra column's Parquet value as JSON: dates and times as ISO-8601 text, decimals as numbers."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (dt.date, dt.time)):  # datetimes too
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _as_is(value: object) -> object:
    return value


def _row(values: dict, extra: Callable[[object], object]) -> dict:
    """A read row: contract fields as text, extra columns through `extra`."""
    return {key: as_text(value) if key in CONTRACT_FIELDS else extra(value) for key, value in values.items()}


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, dtype=object)  # object from the start: an int column with gaps stays int


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"{path}: unknown file type {path.suffix!r}; use .csv, .jsonl (or .ndjson) or .parquet"
        )
    return fmt


def readable_format(path: Path) -> str:
    """The format of a file that exists and has bytes to read; a UserError that says why not otherwise."""
    if path.is_dir():
        raise UserError(f"{path} is a directory: name one CSV, JSON Lines or Parquet file")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    fmt = file_format(path)
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty: there is nothing to load")
    return fmt


def read_chunks(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of object dtype: contract fields str or None, extra columns their JSON value."""
    fmt = readable_format(path)
    try:
        if fmt == "csv":
            yield from _csv(path, chunk_rows)
        elif fmt == "jsonl":
            yield from _jsonl(path, chunk_rows)
        else:
            yield from _parquet(path, chunk_rows)
    except UserError:
        raise
    except (ValueError, orjson.JSONDecodeError, pd.errors.ParserError, OSError) as exc:
        raise UserError(f"{path}: cannot be read as {fmt}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file fails in pyarrow's own error classes: one line for the user all the same
        raise UserError(f"{path}: cannot be read as {fmt}: {exc}") from None


def _csv(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    reader = pd.read_csv(
        path, dtype=str, keep_default_na=False, na_values=[""], chunksize=chunk_rows, encoding="utf-8"
    )
    for chunk in reader:
        yield chunk.astype(object).where(chunk.notna(), None)


def _jsonl(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    rows: list[dict] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise UserError(f"{path}: line {number} is not valid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}: line {number} is not a JSON object")
            rows.append(_row(row, _as_is))
            if len(rows) >= chunk_rows:
                yield _frame(rows)
                rows = []
    if rows:
        yield _frame(rows)


def _parquet(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        yield _frame([_row(row, json_value) for row in batch.to_pylist()])

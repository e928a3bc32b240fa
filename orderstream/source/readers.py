"""Read CSV, JSON Lines and Parquet files in bounded chunks of string-valued rows.

Values are kept as given: numbers and booleans become their text, so validation (not
loading) judges them. A file that cannot be read raises UserError and yields nothing
that the caller may already have used: callers load a file in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pandas as pd

from orderstream.errors import UserError

CHUNK_ROWS = 50_000
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


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"{path}: unknown file type {path.suffix!r}; use .csv, .jsonl (or .ndjson) or .parquet"
        )
    return fmt


def read_chunks(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of object dtype whose cells are str or None."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    fmt = file_format(path)
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
    except Exception as exc:  # pyarrow raises its own error classes for corrupt files
        raise UserError(f"{path}: cannot be read as {fmt}: {exc}") from None


def _texts(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype(object)
    return frame.apply(lambda col: col.map(as_text)) if len(frame) else frame


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
            rows.append({key: as_text(value) for key, value in row.items()})
            if len(rows) >= chunk_rows:
                yield pd.DataFrame.from_records(rows).astype(object)
                rows = []
    if rows:
        yield pd.DataFrame.from_records(rows).astype(object)


def _parquet(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        yield _texts(batch.to_pandas())

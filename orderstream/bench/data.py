"""Bench data: the seed generator's events, loaded fast, and the exact messages they become.

Events are the **inventory share of the seed data** (`generate_events`, rows of type
`inventory` with the seed's columns: sku, quantity, warehouse_id, the extra `channel`). A
pool of up to `POOL_EVENTS` is generated once per process and tiled for larger counts, each
copy with fresh event ids of the same length (`evt-<copy as 8 hex digits><rest of the
original id>`), so messages keep their size.

Loading is not what the bench measures, so rows go in with one COPY, transformed exactly as
`repository.insert_events` would store them (`event_rows`: contract fields as columns, extra
columns as JSON in `extra`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import pandas as pd
from psycopg import sql
from sqlalchemy import Engine, func, select

from orderstream.db.models import OrderEvent
from orderstream.errors import UserError
from orderstream.kafka import clients
from orderstream.settings import Settings
from orderstream.source.fields import EVENT_FIELDS
from orderstream.source.repository import event_rows, insert_stock
from orderstream.source.seed import generate_events, generate_stock

POOL_EVENTS = 100_000
CHUNK = 50_000
SEED = 7
INVENTORY_PER_ORDER = 10 / 6  # the seed's mean number of inventory lines per order
SOURCE_COLUMNS = (*EVENT_FIELDS, "extra", "loaded_at")


@cache
def _pool(size: int, kinds: tuple[str, ...]) -> pd.DataFrame:
    per_order = INVENTORY_PER_ORDER if kinds == ("inventory",) else 3.0
    orders = math.ceil(size / per_order * 1.05) + 10
    while True:
        frames = [f[f["type"].isin(kinds)] for f in generate_events(orders, seed=SEED)]
        frame = pd.concat(frames, ignore_index=True)
        if len(frame) >= size:
            return frame.iloc[:size].dropna(axis=1, how="all").reset_index(drop=True)
        orders *= 2


def inventory_pool(size: int = POOL_EVENTS) -> pd.DataFrame:
    """The first `size` inventory events of the seed data (cached per process)."""
    return _pool(size, ("inventory",))


def order_pool(size: int) -> pd.DataFrame:
    """The first `size` routed events (inventory and delivery, lifecycle order) of the seed data."""
    return _pool(size, ("inventory", "delivery"))


def _with_copy_ids(frame: pd.DataFrame, copy: int) -> pd.DataFrame:
    if copy == 0:
        return frame
    frame = frame.copy()
    frame["event_id"] = "evt-" + f"{copy:08x}" + frame["event_id"].str.slice(12)
    return frame


def inventory_frames(count: int, chunk: int = CHUNK) -> Iterator[pd.DataFrame]:
    """`count` inventory events with unique ids, in frames of at most `chunk` rows."""
    pool = inventory_pool(min(count, POOL_EVENTS))
    done = 0
    while done < count:
        copy, start = divmod(done, len(pool))
        take = min(chunk, len(pool) - start, count - done)
        yield _with_copy_ids(pool.iloc[start : start + take], copy)
        done += take


def copy_statement(table: str, columns: tuple[str, ...]) -> sql.Composed:
    """`COPY table (columns) FROM STDIN`, identifiers quoted by psycopg."""
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )


def copy_events(engine: Engine, frames: Iterator[pd.DataFrame] | list[pd.DataFrame]) -> int:
    """Append events to the source repository with COPY, stored as insert_events stores them."""
    loaded_at = dt.datetime.now(dt.UTC)
    count = 0
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None  # a connection fresh from the pool has its driver connection
        with conn.cursor() as cursor:
            with cursor.copy(copy_statement("order_events", SOURCE_COLUMNS)) as copy:
                for frame in frames:
                    for row in event_rows(frame):
                        copy.write_row([*(row.get(c) for c in EVENT_FIELDS), row.get("extra"), loaded_at])
                        count += 1
        conn.commit()
    finally:
        raw.close()
    return count


def load_stock(engine: Engine) -> int:
    """The seed's stock levels for every SKU of the catalogue at every warehouse."""
    from orderstream.db.engine import session_factory

    with session_factory(engine).begin() as session:
        return insert_stock(session, generate_stock(SEED)).loaded


def pending_count(engine: Engine) -> int:
    from orderstream.db.engine import session_factory

    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).where(OrderEvent.outcome.is_(None))) or 0)


@dataclass(frozen=True)
class Messages:
    """Messages as the pipeline sends them: key order_id, JSON value, header event_id."""

    keys: list[bytes]
    values: list[bytes]
    event_ids: list[str]

    def __len__(self) -> int:
        return len(self.values)

    @property
    def avg_value_bytes(self) -> float:
        return sum(map(len, self.values)) / len(self.values) if self.values else 0.0

    @property
    def avg_key_bytes(self) -> float:
        return sum(map(len, self.keys)) / len(self.keys) if self.keys else 0.0

    @property
    def avg_header_bytes(self) -> float:
        return (len("event_id") + sum(map(len, self.event_ids)) / len(self.event_ids)) if self.event_ids else 0.0


def messages_of(frame: pd.DataFrame) -> Messages:
    """The messages the pipeline makes of source rows (a frame as `read_pending` returns)."""
    from orderstream.producer.publish import payloads

    # Each event type's payloads have their own fields: made type by type, kept in row order.
    types = frame["type"].tolist()
    values: list[bytes] = [b""] * len(frame)
    for event_type in dict.fromkeys(types):
        positions = [i for i, t in enumerate(types) if t == event_type]
        for i, value in zip(positions, payloads(frame.iloc[positions], event_type)):
            # orjson hands back each document in a buffer of about 4 KB; a right-sized copy keeps
            # a few hundred thousand of them from taking gigabytes in this process.
            values[i] = bytes(memoryview(value))
    return Messages(keys=[k.encode() for k in frame["order_id"]], values=values, event_ids=[str(e) for e in frame["event_id"]])


def source_messages(engine: Engine, chunk: int = CHUNK) -> Messages:
    """Read every pending source row back (as the pipeline reads it) and make its messages."""
    from orderstream.db.engine import session_factory
    from orderstream.producer.extract import read_pending

    keys: list[bytes] = []
    values: list[bytes] = []
    event_ids: list[str] = []
    after = 0
    with session_factory(engine)() as session:
        while True:
            frame = read_pending(session, after, chunk)
            if frame.empty:
                break
            after = int(frame["id"].iloc[-1])
            part = messages_of(frame)
            keys += part.keys
            values += part.values
            event_ids += part.event_ids
    return Messages(keys, values, event_ids)


def frame_messages(frame: pd.DataFrame) -> Messages:
    """The messages of generated events without a round trip through the database."""
    rows = pd.DataFrame(event_rows(frame), columns=[*EVENT_FIELDS, "extra"]).astype(object)
    return messages_of(rows.where(rows.notna(), None))


class BareProducer:
    """confluent-kafka with the pipeline's producer config, counting acknowledgements."""

    def __init__(self, settings: Settings) -> None:
        self.acked = 0
        self.failed = 0
        self._producer = clients.producer(settings, on_delivery=self._on_delivery)

    def _on_delivery(self, err, _msg) -> None:
        if err is None:
            self.acked += 1
        else:
            self.failed += 1

    def send(self, topic: str, messages: Messages) -> None:
        produce, poll = self._producer.produce, self._producer.poll
        for key, value, event_id in zip(messages.keys, messages.values, messages.event_ids):
            while True:
                try:
                    produce(topic, value, key, headers=[("event_id", event_id)])
                    break
                except BufferError:
                    poll(0.05)
            poll(0)

    def flush(self, timeout: float = 120.0) -> None:
        left = self._producer.flush(timeout)
        if left or self.failed:
            raise UserError(f"bench producer: {left} messages unacknowledged, {self.failed} failed")


def prefill_topic(settings: Settings, topic: str, count: int) -> Messages | None:
    """Produce `count` inventory events' messages to `topic` (untimed set-up); sizes of the last chunk."""
    producer = BareProducer(settings)
    last = None
    for frame in inventory_frames(count):
        last = frame_messages(frame)
        producer.send(topic, last)
    producer.flush()
    if producer.acked != count:
        raise UserError(f"prefilling {topic}: {producer.acked} of {count} messages acknowledged")
    return last

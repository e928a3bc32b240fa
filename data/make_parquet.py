"""Writes events.parquet beside this file: `python data/make_parquet.py`.

Typed columns, as a warehouse export has them: `quantity` an integer, `created_at` a
timestamp with its zone, the extras `gift_wrap` a boolean and `weight_kg` a float.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ADDRESS = ("bo@example.org", "2 High St", "Leeds", "LS1 4AP", "GB")
DUBLIN = ("cy@example.net", "5 Harbour Rd", "Dublin", "D02 X285", "IE")
NO_ADDRESS = (None,) * 5


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=dt.UTC)


ROWS = [
    # event_id, order_id, type, created_at, sku, quantity, warehouse_id, address, status, gift_wrap, weight_kg
    ("pq-001", "o-3001", "inventory", at(25, 13), "SKU-003", 3, "north", NO_ADDRESS, None, False, 1.5),
    ("pq-002", "o-1002", "delivery", at(26, 9), None, None, None, ADDRESS, "dispatched", None, None),
    ("pq-003", "o-2001", "delivery", at(26, 9, 30), None, None, None, DUBLIN, "delivered", True, None),
    ("pq-101", "o-3101", "inventory", at(25, 13, 5), "SKU-001", 20_000, None, NO_ADDRESS, None, False, 80.0),
    ("pq-102", "o-3102", "inventory", at(25, 13, 6), None, 1, None, NO_ADDRESS, None, True, 0.2),
    ("csv-001", "o-1001", "inventory", at(25, 9), "SKU-001", 2, None, NO_ADDRESS, None, None, None),
]


def table() -> pa.Table:
    columns: dict[str, list] = {name: [] for name in (
        "event_id", "order_id", "type", "created_at", "sku", "quantity", "warehouse_id", "customer_email",
        "address_line", "city", "postal_code", "country", "status", "gift_wrap", "weight_kg")}
    for event_id, order_id, kind, created, sku, quantity, warehouse, address, status, gift_wrap, weight in ROWS:
        values = (event_id, order_id, kind, created, sku, quantity, warehouse, *address, status, gift_wrap, weight)
        for name, value in zip(columns, values):
            columns[name].append(value)
    types = {"created_at": pa.timestamp("s", tz="UTC"), "quantity": pa.int64(), "gift_wrap": pa.bool_(),
             "weight_kg": pa.float64()}
    return pa.table({name: pa.array(values, type=types.get(name, pa.string())) for name, values in columns.items()})


if __name__ == "__main__":
    pq.write_table(table(), Path(__file__).with_name("events.parquet"))

"""Realistic sample shop data: customers, a SKU catalogue with stock, and order lifecycles."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
from faker import Faker

LOCALES = {"DE": "de_DE", "FR": "fr_FR", "GB": "en_GB", "NL": "nl_NL", "US": "en_US", "IT": "it_IT"}
WAREHOUSES = ("main", "east", "west")
OFFSETS = ("+00:00", "+01:00", "+02:00", "-05:00", "Z")

# The kinds of bad rows a real feed has: each takes a good row and spoils one field.
CORRUPTIONS = (
    ("quantity", "abc"),
    ("quantity", "0"),
    ("quantity", "10001"),
    ("quantity", "2.5"),
    ("sku", None),
    ("customer_email", "not-an-email"),
    ("country", "Germany"),
    ("postal_code", None),
    ("type", "Inventory"),
    ("type", " delivery"),
    ("type", None),
    ("created_at", "yesterday"),
    ("created_at", "2026-11-25T10:00:00"),
    ("order_id", None),
)


@dataclass(frozen=True)
class Customer:
    email: str
    address_line: str
    city: str
    postal_code: str
    country: str


def _customers(rng: random.Random, count: int) -> list[Customer]:
    fakers = {country: Faker(locale) for country, locale in LOCALES.items()}
    for index, fake in enumerate(fakers.values()):
        fake.seed_instance(rng.randrange(1 << 30) + index)
    customers = []
    for _ in range(count):
        country = rng.choice(list(LOCALES))
        fake = fakers[country]
        customers.append(
            Customer(
                email=fake.unique.email(),
                address_line=fake.street_address().replace("\n", ", "),
                city=fake.city(),
                postal_code=fake.postcode(),
                country=country,
            )
        )
    return customers


def catalogue(count: int = 300) -> list[str]:
    return [f"SKU-{n:05d}" for n in range(1, count + 1)]


def stock_frame(rng: random.Random, skus: list[str]) -> pd.DataFrame:
    rows = []
    for sku in skus:
        scarce = rng.random() < 0.1  # some items run out, so backorders happen
        for warehouse in WAREHOUSES:
            on_hand = rng.randint(0, 5) if scarce else rng.randint(200, 2000)
            rows.append({"sku": sku, "warehouse_id": warehouse, "on_hand": str(on_hand)})
    return pd.DataFrame(rows)


def _order_events(rng: random.Random, order_no: int, customer: Customer, skus: list[str], at: dt.datetime) -> list[dict]:
    order_id = f"ORD-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
    offset = rng.choice(OFFSETS)
    tz = dt.UTC if offset == "Z" else dt.datetime.strptime(offset, "%z").tzinfo

    def stamp(seconds: int) -> str:
        text = (at + dt.timedelta(seconds=seconds)).astimezone(tz).isoformat(timespec="seconds")
        return text.replace("+00:00", "Z") if offset == "Z" else text

    def event(kind: str, seconds: int, **fields) -> dict:
        return {"event_id": f"evt-{uuid.UUID(int=rng.getrandbits(128))}", "order_id": order_id,
                "type": kind, "created_at": stamp(seconds), **fields}

    events = []
    for line in range(rng.choice((1, 1, 1, 2, 2, 3))):
        events.append(event("inventory", line, sku=rng.choice(skus), quantity=str(rng.randint(1, 5)),
                            warehouse_id=rng.choice(WAREHOUSES + (None,)), channel=rng.choice(("web", "app"))))
    address = {"customer_email": customer.email, "address_line": customer.address_line,
               "city": customer.city, "postal_code": customer.postal_code, "country": customer.country}
    events.append(event("delivery", 5, status="requested", **address))
    if rng.random() < 0.15:
        events.append(event("payment", 6, amount=f"{rng.uniform(5, 400):.2f}", currency="EUR"))
    roll = rng.random()
    if roll < 0.06:
        events.append(event("delivery", 3600, status="cancelled", **address))
    elif roll < 0.75:
        events.append(event("delivery", 86_400, status="dispatched", **address))
        if roll < 0.65:
            events.append(event("delivery", 2 * 86_400, status="delivered", **address))
    return events


def generate_events(orders: int, invalid_rate: float = 0.0, seed: int = 7, chunk_orders: int = 20_000) -> Iterator[pd.DataFrame]:
    """Yield event frames of at most `chunk_orders` orders each, lifecycles in order."""
    rng = random.Random(seed)
    customers = _customers(rng, min(2_000, max(orders, 1)))
    skus = catalogue()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    for first in range(0, orders, chunk_orders):
        rows: list[dict] = []
        for order_no in range(first, min(orders, first + chunk_orders)):
            at = start + dt.timedelta(milliseconds=order_no * 10)
            rows.extend(_order_events(rng, order_no, rng.choice(customers), skus, at))
        for row in rows:
            if invalid_rate and rng.random() < invalid_rate:
                column, value = rng.choice(CORRUPTIONS)
                row[column] = value
            elif invalid_rate and row["type"] == "inventory" and rng.random() < invalid_rate / 10:
                row["sku"] = "SKU-UNKNOWN"  # valid row that the inventory consumer dead-letters
        yield pd.DataFrame.from_records(rows)


def generate_stock(seed: int = 7) -> pd.DataFrame:
    return stock_frame(random.Random(seed + 1), catalogue())

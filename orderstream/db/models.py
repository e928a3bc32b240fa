"""Typed tables of the whole pipeline: source repository, effects, ledgers."""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, for bulk statements (SQLAlchemy types `__table__` as any FromClause)."""
    return cast(Table, model.__table__)


class OrderEvent(Base):
    """The source repository: rows exactly as shops gave them, plus the producer's outcome.

    `outcome` is NULL until the producer has handled the row; it is the progress mark.
    A row that commits late is still NULL and is picked up by the next pass, so no
    id-based high-water mark can skip it.
    """

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(Text, unique=True)
    order_id: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[str | None] = mapped_column(Text)
    sku: Mapped[str | None] = mapped_column(Text)
    quantity: Mapped[str | None] = mapped_column(Text)
    warehouse_id: Mapped[str | None] = mapped_column(Text)
    customer_email: Mapped[str | None] = mapped_column(Text)
    address_line: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    postal_code: Mapped[str | None] = mapped_column(Text)
    country: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[str | None] = mapped_column(Text)  # JSON object of extra columns
    load_id: Mapped[int | None] = mapped_column(BigInteger, index=True)  # source_loads.id
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    outcome: Mapped[str | None] = mapped_column(String(16))  # produced|quarantined|skipped
    batch_id: Mapped[str | None] = mapped_column(String(40))
    produced_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Where the broker acknowledged the event in its type's topic (from the delivery report).
    produced_partition: Mapped[int | None] = mapped_column(Integer)
    produced_offset: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index(
            "ix_order_events_pending",
            "id",
            postgresql_where=outcome.is_(None),
            sqlite_where=outcome.is_(None),
        ),
        Index("ix_order_events_type_outcome", "type", "outcome"),
    )


class SourceLoad(Base):
    """One `orderstream load` of a file: what was loaded and what was refused."""

    __tablename__ = "source_loads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # events|stock
    loaded: Mapped[int] = mapped_column(Integer, default=0)
    refused_missing_id: Mapped[int] = mapped_column(Integer, default=0)
    refused_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProducerBatch(Base):
    """Producer progress: one row per produced batch with its counts and validation summary."""

    __tablename__ = "producer_batches"

    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    extracted: Mapped[int] = mapped_column(Integer, default=0)
    produced_inventory: Mapped[int] = mapped_column(Integer, default=0)
    produced_delivery: Mapped[int] = mapped_column(Integer, default=0)
    skipped_other: Mapped[int] = mapped_column(Integer, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, default=0)
    validation: Mapped[str | None] = mapped_column(Text)  # JSON: per-expectation counts


class Quarantine(Base):
    """Rows that failed validation, with every reason; never produced until corrected."""

    __tablename__ = "quarantine"

    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    source_id: Mapped[int] = mapped_column(BigInteger)
    batch_id: Mapped[str] = mapped_column(String(40))
    reasons: Mapped[str] = mapped_column(Text)  # JSON list of strings
    row: Mapped[str] = mapped_column(Text)  # JSON of the row as loaded
    quarantined_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Stock(Base):
    __tablename__ = "stock"

    sku: Mapped[str] = mapped_column(Text, primary_key=True)
    warehouse_id: Mapped[str] = mapped_column(Text, primary_key=True)
    on_hand: Mapped[int] = mapped_column(Integer)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (CheckConstraint("reserved >= 0", name="ck_stock_reserved_nonneg"),)


class Reservation(Base):
    """The effect of one inventory event: `reserved` or `backordered`.

    A cancelled order releases its reservations (`released_at`); the outcome stays,
    because the event did take effect.
    """

    __tablename__ = "reservations"

    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    order_id: Mapped[str] = mapped_column(Text, index=True)
    sku: Mapped[str] = mapped_column(Text)
    warehouse_id: Mapped[str] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # reserved|backordered
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    released_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Delivery(Base):
    __tablename__ = "deliveries"

    order_id: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    customer_email: Mapped[str] = mapped_column(Text)
    address_line: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    postal_code: Mapped[str | None] = mapped_column(Text)
    country: Mapped[str | None] = mapped_column(Text)
    postal_area: Mapped[str] = mapped_column(Text)
    slot_date: Mapped[dt.date | None] = mapped_column(Date)
    slot: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeliveryCapacity(Base):
    """Bookings per postal area and day, guarded by a conditional update."""

    __tablename__ = "delivery_capacity"

    postal_area: Mapped[str] = mapped_column(Text, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    booked: Mapped[int] = mapped_column(Integer, default=0)


class DeliveryHistory(Base):
    __tablename__ = "delivery_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(Text, index=True)
    event_id: Mapped[str] = mapped_column(Text)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)


class Notification(Base):
    """One customer message per delivery status change; sent once by the notify flow."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(Text)
    to_status: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(Text, unique=True)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("order_id", "to_status", name="uq_notification_change"),)


class ProcessedEvent(Base):
    """The exactly-once ledger: written in the same transaction as the event's effect."""

    __tablename__ = "processed_events"

    consumer_group: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    topic: Mapped[str] = mapped_column(Text)
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(16))  # applied|dead_lettered
    error_class: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_processed_events_topic_outcome", "topic", "outcome"),)


class ConsumerCounter(Base):
    """Counts a user asks about that have no row of their own, such as redeliveries skipped."""

    __tablename__ = "consumer_counters"

    consumer_group: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class ReconciliationRun(Base):
    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ran_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ok: Mapped[bool]
    missing: Mapped[int] = mapped_column(Integer)
    duplicates: Mapped[int] = mapped_column(Integer)
    details: Mapped[str] = mapped_column(Text)  # JSON with the offending ids

"""The whole life of one order, hop by hop, with the time each hop took.

Per source event of the order: loaded (from which file), validated (or quarantined, with every
reason, and released), produced (topic, partition and offset, when the broker acknowledged it),
taken effect or dead-lettered in each consumer group (when), and the notifications it queued
and sent. Then the order's reservations, its delivery with its slot and status history, and
its notifications. Everything comes from the database: no broker needed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from orderstream.db.models import (
    Delivery,
    DeliveryHistory,
    Notification,
    OrderEvent,
    ProcessedEvent,
    Quarantine,
    Reservation,
    SourceLoad,
)
from orderstream.inspect.common import iso, shown
from orderstream.ops.common import as_utc
from orderstream.settings import Settings


@dataclass
class Hop:
    step: str  # loaded | validated | quarantined | released | skipped | pending | produced | applied | ...
    at: str | None
    seconds: float | None  # since the event's previous hop
    detail: str


@dataclass
class EventTrace:
    event_id: str
    type: str | None
    status: str | None
    created_at: str | None  # as the shop gave it
    outcome: str  # produced | quarantined | skipped | pending
    topic: str | None
    partition: int | None
    offset: int | None
    hops: list[Hop] = field(default_factory=list)


@dataclass
class OrderTrace:
    order_id: str
    events: list[EventTrace]
    reservations: list[dict]
    delivery: dict | None
    history: list[dict]
    notifications: list[dict]
    seconds: float | None  # first hop to last

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"order {self.order_id}: {len(self.events)} source events" + _delivery_text(self.delivery)]
        if self.seconds is not None:
            out.append(f"  first hop to last: {self.seconds:.3f} s")
        for ev in self.events:
            out.append(f"event {ev.event_id}  {ev.type or '?'}{' ' + ev.status if ev.status else ''}"
                       f"  created_at {ev.created_at or '?'}")
            for hop in ev.hops:
                took = f"+{hop.seconds:.3f}s" if hop.seconds is not None else ""
                out.append(f"  {shown(hop.at):23}  {took:>10}  {hop.step:<13} {hop.detail}")
        if self.reservations:
            out.append("reservations")
            for r in self.reservations:
                released = f", released {shown(r['released_at'])}" if r["released_at"] else ""
                out.append(f"  {shown(r['created_at'])}  {r['outcome']} {r['quantity']} x {r['sku']} at "
                           f"{r['warehouse_id']} (event {r['event_id']}){released}")
        if self.history:
            out.append("delivery history")
            for h in self.history:
                note = f"  {h['note']}" if h["note"] else ""
                out.append(f"  {shown(h['changed_at'])}  {h['from_status'] or '-'} -> {h['to_status']}"
                           f" (event {h['event_id']}){note}")
        if self.notifications:
            out.append("notifications")
            for n in self.notifications:
                sent = f"sent {shown(n['sent_at'])} (+{n['seconds']:.3f}s)" if n["sent_at"] else n["state"]
                error = f"; last error: {n['last_error']}" if n["last_error"] else ""
                out.append(f"  {n['to_status']:<10} queued {shown(n['created_at'])}, {sent}, to {n['recipient']}{error}")
        return out


def _delivery_text(delivery: dict | None) -> str:
    if delivery is None:
        return ""
    slot = f", slot {delivery['slot_date']} #{delivery['slot']}" if delivery["slot_date"] else ""
    return f"; delivery {delivery['status']}{slot} (area {delivery['postal_area']})"


def _seconds(later: dt.datetime | None, earlier: dt.datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((as_utc(later) - as_utc(earlier)).total_seconds(), 3)


class _Hops:
    """An event's hops in order, each timed from the one before it that has a time."""

    def __init__(self) -> None:
        self.hops: list[Hop] = []
        self.last: dt.datetime | None = None
        self.times: list[dt.datetime] = []

    def add(self, step: str, at: dt.datetime | None, detail: str) -> None:
        self.hops.append(Hop(step, iso(at), _seconds(at, self.last), detail))
        if at is not None:
            self.last = at
            self.times.append(as_utc(at))


def trace_order(session: Session, settings: Settings, order_id: str) -> OrderTrace | None:
    """The order's trace, or None if nothing in the database knows the order."""
    events = list(session.scalars(select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)))
    reservations = list(session.scalars(
        select(Reservation).where(Reservation.order_id == order_id).order_by(Reservation.created_at)
    ))
    delivery = session.get(Delivery, order_id)
    history = list(session.scalars(
        select(DeliveryHistory).where(DeliveryHistory.order_id == order_id).order_by(DeliveryHistory.id)
    ))
    notifications = list(session.scalars(
        select(Notification).where(Notification.order_id == order_id).order_by(Notification.id)
    ))
    if not (events or reservations or delivery or history or notifications):
        return None
    ids = [e.event_id for e in events]
    loads = _by_key(session, SourceLoad, SourceLoad.id, {e.load_id for e in events if e.load_id is not None})
    quarantine = _by_key(session, Quarantine, Quarantine.event_id, set(ids))
    ledger: dict[str, list[ProcessedEvent]] = {}
    if ids:
        for entry in session.scalars(
            select(ProcessedEvent).where(ProcessedEvent.event_id.in_(ids)).order_by(ProcessedEvent.processed_at)
        ):
            ledger.setdefault(entry.event_id, []).append(entry)
    role_of = {group: role for role, group in settings.groups.items()}
    all_times: list[dt.datetime] = []
    traced = []
    for ev in events:
        hops = _Hops()
        load = loads.get(ev.load_id)
        hops.add("loaded", ev.loaded_at, f"from {load.source} (load {load.id})" if load else "(no load record)")
        _validation(hops, ev, quarantine.get(ev.event_id))
        topic = settings.topics.get(ev.type or "") if ev.outcome == "produced" else None
        if topic is not None:
            where = f"{topic}[{ev.produced_partition}]@{ev.produced_offset}" if ev.produced_offset is not None else (
                f"{topic} (position not recorded)")
            hops.add("produced", ev.produced_at, where)
        for entry in ledger.get(ev.event_id, []):
            hops.add(*_consumed(entry, role_of, reservations, history))
        for note in notifications:
            if note.event_id == ev.event_id:
                hops.add("notified", note.sent_at, f"{note.to_status} to {note.recipient}" if note.sent_at else
                         f"{note.to_status} queued, {note.state}")
        all_times += hops.times
        traced.append(EventTrace(
            event_id=ev.event_id, type=ev.type, status=ev.status, created_at=ev.created_at,
            outcome=ev.outcome or "pending", topic=topic, partition=ev.produced_partition, offset=ev.produced_offset,
            hops=hops.hops,
        ))
    return OrderTrace(
        order_id=order_id,
        events=traced,
        reservations=[
            {"event_id": r.event_id, "sku": r.sku, "warehouse_id": r.warehouse_id, "quantity": r.quantity,
             "outcome": r.outcome, "created_at": iso(r.created_at), "released_at": iso(r.released_at)}
            for r in reservations
        ],
        delivery=None if delivery is None else {
            "status": delivery.status, "slot_date": delivery.slot_date.isoformat() if delivery.slot_date else None,
            "slot": delivery.slot, "postal_area": delivery.postal_area, "updated_at": iso(delivery.updated_at),
        },
        history=[
            {"from_status": h.from_status, "to_status": h.to_status, "event_id": h.event_id,
             "changed_at": iso(h.changed_at), "note": h.note}
            for h in history
        ],
        notifications=[
            {"to_status": n.to_status, "state": n.state, "recipient": n.recipient, "event_id": n.event_id,
             "created_at": iso(n.created_at), "sent_at": iso(n.sent_at), "seconds": _seconds(n.sent_at, n.created_at),
             "attempts": n.attempts, "last_error": n.last_error}
            for n in notifications
        ],
        seconds=round((max(all_times) - min(all_times)).total_seconds(), 3) if all_times else None,
    )


def _by_key(session: Session, model, column, keys: set) -> dict:
    if not keys:
        return {}
    return {getattr(row, column.key): row for row in session.scalars(select(model).where(column.in_(sorted(keys))))}


def _validation(hops: _Hops, ev: OrderEvent, entry: Quarantine | None) -> None:
    """The producer's verdict. Validation has no time of its own: its batch is committed after the
    broker acknowledged it, so `produced` is timed from `loaded`."""
    if entry is not None:  # quarantined now, or once and released by a re-validation
        reasons = "; ".join(orjson.loads(entry.reasons or "[]"))
        hops.add("quarantined", entry.quarantined_at, reasons)
        if entry.resolved_at is not None:
            hops.add("released", entry.resolved_at, "corrected and re-validated: sent by the next produce pass")
        if ev.outcome == "quarantined":
            return
    if ev.outcome is None:
        hops.add("pending", None, "not handled by the producer yet")
    elif ev.outcome == "skipped":
        hops.add("skipped", None, f"valid; type {ev.type!r} is not routed to a topic (batch {ev.batch_id})")
    elif ev.outcome == "produced":
        hops.add("validated", None, f"valid (batch {ev.batch_id})")


def _consumed(
    entry: ProcessedEvent, role_of: dict[str, str], reservations: list[Reservation], history: list[DeliveryHistory]
) -> tuple[str, dt.datetime, str]:
    who = f"group {entry.consumer_group}"
    if entry.outcome == "dead_lettered":
        return "dead_lettered", entry.processed_at, f"{who}: {entry.error_class}: {entry.error_message}"
    effects = []
    if role_of.get(entry.consumer_group) == "inventory":
        effects = [f"{r.outcome} {r.quantity} x {r.sku} at {r.warehouse_id}" for r in reservations
                   if r.event_id == entry.event_id]
    elif role_of.get(entry.consumer_group) == "delivery":
        effects = [f"{h.from_status or '-'} -> {h.to_status}" for h in history if h.event_id == entry.event_id]
    return "applied", entry.processed_at, f"{who}" + (f": {', '.join(effects)}" if effects else "")

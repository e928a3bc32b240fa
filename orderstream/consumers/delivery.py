"""delivery_data_consumer: schedule deliveries and move them through their statuses.

Transitions (anything else is illegal: recorded in the ledger as `dead_lettered` with
the reason, copied to `<topic>.dlq`, no other row changes):

    (none)      --requested-->  requested    creates the delivery, then the system tries
    requested   --(system)--->  scheduled    to schedule it at once (below)
    scheduled   --dispatched->  dispatched
    dispatched  --delivered-->  delivered
    requested | scheduled | dispatched  --cancelled-->  cancelled

so e.g. `requested` for an order that already has a delivery, `dispatched` with no
delivery or from `requested`, `delivered` from `scheduled`, and anything after
`delivered` or `cancelled` are illegal. An event that breaks the topic's schema
(`orderstream.events.models.DeliveryOrder`: e.g. a status other than requested (or null in
the all-text shape), dispatched, delivered, cancelled, or a missing address) is rejected.

Scheduling: postal area = country + the first 3 characters of the postal code, uppercase,
without spaces. The delivery gets the first day from created_at's date + 1 to + the
horizon (`scheduling_horizon_days`) whose `delivery_capacity.booked` is below
`daily_capacity_per_area`; its slot is `booked % slots_per_day`. If no day fits it stays
`requested`. A booking is never given back (a cancelled delivery keeps its place).

Every status change, the system's `scheduled` included, adds one `delivery_history` row
and queues exactly one notification (unique per order and status). `cancelled` releases
the order's reservations (see `inventory.release_reservations`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Date, Integer, Text, select
from sqlalchemy.orm import Session

from orderstream.consumers import notices
from orderstream.consumers.inventory import release_reservations
from orderstream.consumers.messages import Envelope, IllegalTransition, ValueReader, value_reader
from orderstream.consumers.transitions import SCHEDULED, Change, Illegal, transition
from orderstream.db import bulk as sql
from orderstream.db.models import Delivery, DeliveryCapacity, DeliveryHistory, Notification, table_of
from orderstream.events.models import DeliveryOrder
from orderstream.settings import Settings

ROLE = "delivery"
DELIVERIES = table_of(Delivery)
CAPACITY = table_of(DeliveryCapacity)
HISTORY = table_of(DeliveryHistory)
NOTIFICATIONS = table_of(Notification)


@dataclass(slots=True, frozen=True)
class DeliveryEvent:
    event_id: str
    order_id: str
    status: str
    created_date: dt.date
    customer_email: str
    address_line: str
    city: str
    postal_code: str
    country: str


def postal_area(country: str, postal_code: str) -> str:
    return (country + "".join(postal_code.split())[:3]).upper()


def delivery_event(order: DeliveryOrder) -> DeliveryEvent:
    return DeliveryEvent(
        event_id=order.event_id,
        order_id=order.order_id,
        status=order.status,
        created_date=order.created_at.date(),  # the local date where the order was placed
        customer_email=order.customer_email,
        address_line=order.address_line,
        city=order.city,
        postal_code=order.postal_code,
        country=order.country,
    )


_read_plain: ValueReader[DeliveryOrder] = ValueReader(ROLE)


def parse_delivery(value: bytes | None) -> DeliveryEvent:
    """The event in a plain JSON record value (either shape); raises `Rejected` with the reason it is not one."""
    return delivery_event(_read_plain(value))


@dataclass(slots=True)
class DeliveryState:
    order_id: str
    status: str
    customer_email: str
    address_line: str | None
    city: str | None
    postal_code: str | None
    country: str | None
    postal_area: str
    slot_date: dt.date | None = None
    slot: int | None = None
    changed: bool = False

    def row(self, now: dt.datetime) -> dict:
        return {
            "order_id": self.order_id,
            "status": self.status,
            "customer_email": self.customer_email,
            "address_line": self.address_line,
            "city": self.city,
            "postal_code": self.postal_code,
            "country": self.country,
            "postal_area": self.postal_area,
            "slot_date": self.slot_date,
            "slot": self.slot,
            "updated_at": now,
        }


def _load_states(session: Session, order_ids: list[str]) -> dict[str, DeliveryState]:
    """Current deliveries of the batch's orders, locked on PostgreSQL, in one query."""
    cols = [DELIVERIES.c[name] for name in DeliveryState.__dataclass_fields__ if name != "changed"]
    query = select(*cols).order_by(DELIVERIES.c.order_id)
    rows = sql.select_keys(session, query, (DELIVERIES.c.order_id,), [(o,) for o in order_ids], lock=True)
    return {row.order_id: DeliveryState(**row._mapping) for row in rows}


def _candidate_days(created: dt.date, horizon: int) -> list[dt.date]:
    return [created + dt.timedelta(days=i) for i in range(1, horizon + 1)]


def _load_capacity(session: Session, keys: list[tuple[str, dt.date]]) -> dict[tuple[str, dt.date], int]:
    """`booked` per (area, day), creating missing rows first so that they can be locked."""
    if not keys:
        return {}
    sql.insert_rows(
        session,
        CAPACITY,
        [{"postal_area": area, "day": day, "booked": 0} for area, day in keys],
        skip_conflicts_on=("postal_area", "day"),
    )
    query = select(CAPACITY.c.postal_area, CAPACITY.c.day, CAPACITY.c.booked).order_by(
        CAPACITY.c.postal_area, CAPACITY.c.day
    )
    rows = sql.select_keys(session, query, (CAPACITY.c.postal_area, CAPACITY.c.day), keys, lock=True)
    return {(area, day): booked for area, day, booked in rows}


def book_slot(
    booked: dict[tuple[str, dt.date], int], area: str, days: list[dt.date], capacity: int, slots_per_day: int
) -> tuple[dt.date, int] | None:
    """Book the first of `days` with room left in `area`: count it in `booked` and return
    (day, slot); None when every day is full."""
    for day in days:
        key = (area, day)
        if booked[key] < capacity:
            slot = booked[key] % slots_per_day
            booked[key] += 1
            return day, slot
    return None


def notification(state: DeliveryState, event_id: str, slots_per_day: int) -> dict:
    """The customer notification of the status `state` has just taken, ready to queue."""
    subject, body = notices.render(
        order_id=state.order_id,
        status=state.status,
        slot_date=state.slot_date,
        slot=state.slot,
        slots_per_day=slots_per_day,
        address=[state.address_line, state.postal_code, state.city, state.country],
    )
    return {
        "order_id": state.order_id,
        "to_status": state.status,
        "event_id": event_id,
        "recipient": state.customer_email,
        "subject": subject,
        "body": body,
        "message_id": notices.message_id(state.order_id, state.status),
    }


def _new_delivery(ev: DeliveryEvent) -> DeliveryState:
    return DeliveryState(
        order_id=ev.order_id,
        status="requested",
        customer_email=ev.customer_email,
        address_line=ev.address_line,
        city=ev.city,
        postal_code=ev.postal_code,
        country=ev.country,
        postal_area=postal_area(ev.country, ev.postal_code),
    )


@dataclass
class _Effects:
    """What a batch writes besides the deliveries themselves."""

    history: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    added: dict[tuple[str, dt.date], int] = field(default_factory=lambda: defaultdict(int))  # bookings per (area, day)
    cancelled: list[str] = field(default_factory=list)  # orders whose reservations are released


class DeliveryHandler:
    role = ROLE

    def __init__(self, settings: Settings) -> None:
        self._read: ValueReader[DeliveryOrder] = value_reader(settings, ROLE)
        self.capacity = settings.daily_capacity_per_area
        self.slots_per_day = settings.slots_per_day
        self.horizon = settings.scheduling_horizon_days

    def parse(self, value: bytes | None) -> DeliveryEvent:
        return delivery_event(self._read(value))

    def apply(self, session: Session, events: Sequence[Envelope], now: dt.datetime) -> list[Envelope]:
        states = _load_states(session, sorted({env.event.order_id for env in events}))
        booked = _load_capacity(session, self._days_to_book(events, states))
        effects = _Effects()
        rejected: list[Envelope] = []
        for env in events:
            ev: DeliveryEvent = env.event
            state = states.get(ev.order_id)
            step = transition(None if state is None else state.status, ev.status)
            if isinstance(step, Illegal):
                env.rejection = IllegalTransition(step.message(ev.order_id))
                rejected.append(env)
                continue
            if state is None:
                state = states[ev.order_id] = _new_delivery(ev)
            self._change(state, step, env, effects)
            if step.schedule:
                days = _candidate_days(ev.created_date, self.horizon)
                booking = book_slot(booked, state.postal_area, days, self.capacity, self.slots_per_day)
                if booking is not None:
                    state.slot_date, state.slot = booking
                    effects.added[(state.postal_area, state.slot_date)] += 1
                    note = f"system: {state.slot_date.isoformat()} slot {state.slot}"
                    self._change(state, SCHEDULED, env, effects, note)
            if step.release:
                effects.cancelled.append(ev.order_id)
        self._write(session, states, effects, now)
        release_reservations(session, effects.cancelled, now)
        return rejected

    def _days_to_book(self, events: Sequence[Envelope], states: dict[str, DeliveryState]) -> list[tuple[str, dt.date]]:
        """Every (area, day) a `requested` event of the batch may book, in lock order."""
        return sorted(
            {
                (postal_area(ev.country, ev.postal_code), day)
                for ev in (env.event for env in events)
                if ev.status == "requested" and ev.order_id not in states
                for day in _candidate_days(ev.created_date, self.horizon)
            }
        )

    def _change(
        self, state: DeliveryState, step: Change, env: Envelope, effects: _Effects, note: str | None = None
    ) -> None:
        """Move the delivery to the step's status: one history row, one queued notification."""
        effects.history.append(
            {
                "order_id": state.order_id,
                "event_id": env.ledger_key,
                "from_status": step.from_status,
                "to_status": step.to_status,
                "note": note,
            }
        )
        state.status = step.to_status
        state.changed = True
        effects.notes.append(notification(state, env.ledger_key, self.slots_per_day))

    def _write(self, session: Session, states: dict[str, DeliveryState], effects: _Effects, now: dt.datetime) -> None:
        sql.insert_rows(
            session,
            DELIVERIES,
            [state.row(now) for _, state in sorted(states.items()) if state.changed],
            update_conflicts_on=("order_id",),
            update_columns=("status", "slot_date", "slot", "updated_at"),
        )
        capacity = self.capacity
        updated = sql.bulk_update(
            session,
            CAPACITY,
            [{"k_area": a, "k_day": d, "k_n": n} for (a, d), n in sorted(effects.added.items())],
            {"k_area": Text(), "k_day": Date(), "k_n": Integer()},
            where=lambda k: [
                CAPACITY.c.postal_area == k["k_area"],
                CAPACITY.c.day == k["k_day"],
                CAPACITY.c.booked + k["k_n"] <= capacity,
            ],
            values=lambda k: {"booked": CAPACITY.c.booked + k["k_n"]},
        )
        sql.require_rowcount(updated, len(effects.added), "delivery capacity")
        sql.insert_rows(session, HISTORY, effects.history, constants={"changed_at": now})
        sql.insert_rows(
            session, NOTIFICATIONS, effects.notes, constants={"state": "queued", "attempts": 0, "created_at": now}
        )

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
`delivered` or `cancelled` are illegal. An event whose status is none of requested
(or null), dispatched, delivered, cancelled violates the schema.

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
from dataclasses import dataclass

from sqlalchemy import Date, Integer, Text, select
from sqlalchemy.orm import Session

from orderstream.consumers import notices
from orderstream.db import bulk as sql
from orderstream.consumers.inventory import release_reservations
from orderstream.consumers.messages import (
    Envelope,
    IllegalTransition,
    Rejected,
    SchemaViolation,
    check_type,
    decode_object,
    optional_str,
    payload_event_id,
    required_str,
)
from orderstream.db.models import Delivery, DeliveryCapacity, DeliveryHistory, Notification
from orderstream.settings import Settings

ROLE = "delivery"
INCOMING_STATUSES = ("requested", "dispatched", "delivered", "cancelled")
ALLOWED_FROM = {
    "dispatched": ("scheduled",),
    "delivered": ("dispatched",),
    "cancelled": ("requested", "scheduled", "dispatched"),
}
DELIVERIES = Delivery.__table__
CAPACITY = DeliveryCapacity.__table__
HISTORY = DeliveryHistory.__table__
NOTIFICATIONS = Notification.__table__


@dataclass(slots=True, frozen=True)
class DeliveryEvent:
    event_id: str | None
    order_id: str
    status: str
    created_date: dt.date | None
    customer_email: str | None
    address_line: str | None
    city: str | None
    postal_code: str | None
    country: str | None


def postal_area(country: str, postal_code: str) -> str:
    return (country + "".join(postal_code.split())[:3]).upper()


def _created_date(obj: dict, required: bool) -> dt.date | None:
    value = obj.get("created_at")
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise SchemaViolation(f"created_at must be an ISO-8601 string, got {value!r:.60}")
    try:
        return dt.datetime.fromisoformat(value).date()
    except ValueError:
        raise SchemaViolation(f"created_at is not ISO-8601: {value!r:.60}") from None


def parse_delivery(value: bytes | None) -> DeliveryEvent:
    obj = decode_object(value)
    try:
        check_type(obj, ROLE)
        status = optional_str(obj, "status", "requested")
        if status not in INCOMING_STATUSES:
            raise SchemaViolation(f"status must be one of {', '.join(INCOMING_STATUSES)}, got {status!r:.40}")
        requested = status == "requested"
        email = required_str(obj, "customer_email") if requested else optional_str(obj, "customer_email")
        if email is not None and "@" not in email:
            raise SchemaViolation(f"customer_email is not an address: {email!r:.80}")
        return DeliveryEvent(
            event_id=payload_event_id(obj),
            order_id=required_str(obj, "order_id", max_len=64),
            status=status,
            created_date=_created_date(obj, required=requested),
            customer_email=email,
            address_line=optional_str(obj, "address_line"),
            city=optional_str(obj, "city"),
            postal_code=required_str(obj, "postal_code") if requested else optional_str(obj, "postal_code"),
            country=required_str(obj, "country") if requested else optional_str(obj, "country"),
        )
    except Rejected as exc:
        exc.event_id = payload_event_id(obj)  # type: ignore[attr-defined]
        raise


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


class DeliveryHandler:
    role = ROLE

    def __init__(self, settings: Settings) -> None:
        self.capacity = settings.daily_capacity_per_area
        self.slots_per_day = settings.slots_per_day
        self.horizon = settings.scheduling_horizon_days

    def parse(self, value: bytes | None) -> DeliveryEvent:
        return parse_delivery(value)

    def apply(self, session: Session, events: Sequence[Envelope], now: dt.datetime) -> list[Envelope]:
        states = _load_states(session, sorted({env.event.order_id for env in events}))
        wanted = sorted(
            {
                (postal_area(ev.country, ev.postal_code), day)
                for ev in (env.event for env in events)
                if ev.status == "requested" and ev.order_id not in states
                for day in _candidate_days(ev.created_date, self.horizon)
            }
        )
        booked = _load_capacity(session, wanted)
        added: dict[tuple[str, dt.date], int] = defaultdict(int)
        history: list[dict] = []
        notes: list[dict] = []
        cancelled: list[str] = []
        rejected: list[Envelope] = []

        def change(
            state: DeliveryState, to_status: str, env: Envelope, note: str | None = None, new: bool = False
        ) -> None:
            history.append(
                {
                    "order_id": state.order_id,
                    "event_id": env.ledger_key,
                    "from_status": None if new else state.status,
                    "to_status": to_status,
                    "note": note,
                }
            )
            state.status = to_status
            state.changed = True
            subject, body = notices.render(
                order_id=state.order_id,
                status=to_status,
                slot_date=state.slot_date,
                slot=state.slot,
                slots_per_day=self.slots_per_day,
                address=[state.address_line, state.postal_code, state.city, state.country],
            )
            notes.append(
                {
                    "order_id": state.order_id,
                    "to_status": to_status,
                    "event_id": env.ledger_key,
                    "recipient": state.customer_email,
                    "subject": subject,
                    "body": body,
                    "message_id": notices.message_id(state.order_id, to_status),
                }
            )

        for env in events:
            ev: DeliveryEvent = env.event
            state = states.get(ev.order_id)
            if ev.status == "requested":
                if state is not None:
                    env.rejection = IllegalTransition(
                        f"requested: order {ev.order_id} already has a delivery (status {state.status})"
                    )
                    rejected.append(env)
                    continue
                state = states[ev.order_id] = DeliveryState(
                    order_id=ev.order_id,
                    status="requested",
                    customer_email=ev.customer_email,
                    address_line=ev.address_line,
                    city=ev.city,
                    postal_code=ev.postal_code,
                    country=ev.country,
                    postal_area=postal_area(ev.country, ev.postal_code),
                )
                change(state, "requested", env, new=True)
                for day in _candidate_days(ev.created_date, self.horizon):
                    key = (state.postal_area, day)
                    if booked[key] < self.capacity:
                        state.slot_date, state.slot = day, booked[key] % self.slots_per_day
                        booked[key] += 1
                        added[key] += 1
                        change(state, "scheduled", env, note=f"system: {day.isoformat()} slot {state.slot}")
                        break
                continue
            allowed = ALLOWED_FROM[ev.status]
            if state is None or state.status not in allowed:
                current = "no delivery exists" if state is None else f"the delivery is {state.status}"
                env.rejection = IllegalTransition(
                    f"{ev.status}: illegal for order {ev.order_id}, {current} (allowed from {'|'.join(allowed)})"
                )
                rejected.append(env)
                continue
            change(state, ev.status, env)
            if ev.status == "cancelled":
                cancelled.append(ev.order_id)

        self._write(session, states, added, history, notes, now)
        release_reservations(session, cancelled, now)
        return rejected

    def _write(self, session, states, added, history, notes, now) -> None:
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
            [{"k_area": a, "k_day": d, "k_n": n} for (a, d), n in sorted(added.items())],
            {"k_area": Text(), "k_day": Date(), "k_n": Integer()},
            where=lambda k: [
                CAPACITY.c.postal_area == k["k_area"],
                CAPACITY.c.day == k["k_day"],
                CAPACITY.c.booked + k["k_n"] <= capacity,
            ],
            values=lambda k: {"booked": CAPACITY.c.booked + k["k_n"]},
        )
        sql.require_rowcount(updated, len(added), "delivery capacity")
        sql.insert_rows(session, HISTORY, history, constants={"changed_at": now})
        sql.insert_rows(session, NOTIFICATIONS, notes, constants={"state": "queued", "attempts": 0, "created_at": now})

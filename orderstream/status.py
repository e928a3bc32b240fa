"""`orderstream status`: the contract's counters, from the database and the broker."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderstream.db.models import Delivery, Notification, OrderEvent, ProcessedEvent, Quarantine, Reservation
from orderstream.errors import UserError
from orderstream.kafka.clients import admin_client
from orderstream.kafka.lag import end_offsets, partition_lag
from orderstream.reconcile import reconcile
from orderstream.settings import DELIVERY_TOPIC, INVENTORY_TOPIC, Settings, dlq_topic
from orderstream.source.repository import refused_duplicates

log = logging.getLogger(__name__)
DELIVERY_STATES = ("requested", "scheduled", "dispatched", "delivered", "cancelled")


def _grouped(session: Session, column, *where) -> dict:
    rows = session.execute(select(column, func.count()).where(*where).group_by(column)).all()
    return {key: int(n) for key, n in rows}


def broker_view(settings: Settings) -> tuple[dict[str, int] | None, dict[str, int] | None]:
    """Consumer lag per role and end offsets per topic, or (None, None) if Kafka is down."""
    try:
        admin = admin_client(settings)
        lag = {
            role: sum(partition_lag(settings, settings.groups[role], topic, admin).values())
            for role, topic in settings.topics.items()
        }
        ends = {topic: sum(end_offsets(admin, topic).values()) for topic in settings.topics.values()}
        return lag, ends
    except (UserError, KafkaException) as exc:
        log.warning("consumer lag unknown: %s", exc)
        return None, None


def collect(session: Session, settings: Settings, *, with_broker: bool = True) -> dict:
    by_type = _grouped(session, OrderEvent.type)
    produced = _grouped(session, OrderEvent.type, OrderEvent.outcome == "produced")
    ledger = session.execute(
        select(ProcessedEvent.consumer_group, ProcessedEvent.outcome, func.count()).group_by(
            ProcessedEvent.consumer_group, ProcessedEvent.outcome
        )
    ).all()
    counts = {(group, outcome): int(n) for group, outcome, n in ledger}
    reservations = _grouped(session, Reservation.outcome)
    deliveries = _grouped(session, Delivery.status)
    notifications = _grouped(session, Notification.state)
    lag, ends = broker_view(settings) if with_broker else (None, None)
    groups = settings.groups
    result = {
        "source": {
            "inventory": by_type.get("inventory", 0),
            "delivery": by_type.get("delivery", 0),
            "other": sum(n for t, n in by_type.items() if t not in ("inventory", "delivery")),
            "refused_duplicates": refused_duplicates(session),
        },
        "quarantined": int(session.scalar(select(func.count()).select_from(Quarantine).where(Quarantine.resolved_at.is_(None))) or 0),
        "produced": {
            INVENTORY_TOPIC: produced.get("inventory", 0),
            DELIVERY_TOPIC: produced.get("delivery", 0),
        },
        "applied": {role: counts.get((group, "applied"), 0) for role, group in groups.items()},
        "inventory": {
            "reserved": reservations.get("reserved", 0),
            "backordered": reservations.get("backordered", 0),
        },
        "deliveries": {state: deliveries.get(state, 0) for state in DELIVERY_STATES},
        "dead_lettered": {
            dlq_topic(INVENTORY_TOPIC): counts.get((groups["inventory"], "dead_lettered"), 0),
            dlq_topic(DELIVERY_TOPIC): counts.get((groups["delivery"], "dead_lettered"), 0),
        },
        "notifications": {
            "queued": sum(notifications.values()),
            "sent": notifications.get("sent", 0),
            "failed": notifications.get("failed", 0),
        },
        "consumer_lag": lag if lag is not None else {"inventory": -1, "delivery": -1},
        "reconciliation": reconcile(session, settings, ends).as_status(),
    }
    return result

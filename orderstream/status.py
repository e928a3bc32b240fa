"""`orderstream status`: the contract's counters, from the database and the broker."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, OffsetSpec
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderstream.db.models import Delivery, Notification, OrderEvent, ProcessedEvent, Quarantine, Reservation
from orderstream.errors import UserError
from orderstream.kafka.clients import admin_client
from orderstream.kafka.groups import group_committed
from orderstream.kafka.lag import end_offsets
from orderstream.reconcile import TopicPositions, reconcile
from orderstream.settings import DELIVERY_TOPIC, INVENTORY_TOPIC, Settings, dlq_topic
from orderstream.source.repository import refused_duplicates

log = logging.getLogger(__name__)
DELIVERY_STATES = ("requested", "scheduled", "dispatched", "delivered", "cancelled")


def _grouped(session: Session, column, *where) -> dict:
    rows = session.execute(select(column, func.count()).where(*where).group_by(column)).all()
    return {key: int(n) for key, n in rows}


@dataclass(frozen=True)
class BrokerView:
    """What the broker says right now: each role's consumer lag and each topic's offsets for its group."""

    lag: dict[str, int]  # role -> messages the group has not committed yet
    positions: dict[str, TopicPositions]  # topic -> offsets


def topic_positions(settings: Settings, admin: AdminClient, group: str, topic: str) -> TopicPositions:
    ends = end_offsets(admin, topic)
    starts = end_offsets(admin, topic, spec=OffsetSpec.earliest())
    return TopicPositions(starts=starts, ends=ends, committed=group_committed(settings, group, topic, sorted(ends)))


def broker_view(settings: Settings) -> BrokerView | None:
    """The broker's view for status and reconciliation, or None if Kafka does not answer."""
    try:
        admin = admin_client(settings)
        positions = {
            topic: topic_positions(settings, admin, settings.groups[role], topic) for role, topic in settings.topics.items()
        }
    except (UserError, KafkaException) as exc:
        log.warning("consumer lag unknown: %s", exc)
        return None
    return BrokerView(lag={role: positions[topic].lag for role, topic in settings.topics.items()}, positions=positions)


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
    broker = broker_view(settings) if with_broker else None
    groups = settings.groups
    result = {
        "source": {
            "inventory": by_type.get("inventory", 0),
            "delivery": by_type.get("delivery", 0),
            "other": sum(n for t, n in by_type.items() if t not in ("inventory", "delivery")),
            "refused_duplicates": refused_duplicates(session),
        },
        "quarantined": int(
            session.scalar(select(func.count()).select_from(Quarantine).where(Quarantine.resolved_at.is_(None))) or 0
        ),
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
        "consumer_lag": broker.lag if broker is not None else {"inventory": -1, "delivery": -1},
        "reconciliation": reconcile(session, settings, broker.positions if broker else None).as_status(),
    }
    return result

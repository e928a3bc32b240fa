"""The delivery state machine: what an incoming status does to a delivery in its current status.

Pure (no database, no Kafka); the table is the one in `orderstream.consumers.delivery`.
"""

from __future__ import annotations

from dataclasses import dataclass

INCOMING_STATUSES = ("requested", "dispatched", "delivered", "cancelled")
# What an incoming status may move a delivery from; `requested` needs no delivery yet.
ALLOWED_FROM = {
    "dispatched": ("scheduled",),
    "delivered": ("dispatched",),
    "cancelled": ("requested", "scheduled", "dispatched"),
}


@dataclass(frozen=True, slots=True)
class Change:
    """A legal status change; each one is a history row and exactly one notification."""

    from_status: str | None  # None: the event creates the delivery
    to_status: str
    schedule: bool = False  # then the system books the first free slot (SCHEDULED) if there is one
    release: bool = False  # the order's stock reservations are given back (compensation)


# The system's move, right after `requested` created the delivery, when a slot is free.
SCHEDULED = Change("requested", "scheduled")


@dataclass(frozen=True, slots=True)
class Illegal:
    """An event that cannot apply to the delivery as it is: recorded and dead-lettered."""

    event_status: str
    current: str | None  # None: no delivery exists

    def message(self, order_id: str) -> str:
        """The `IllegalTransition` reason, as the ledger and the DLQ headers carry it."""
        if self.event_status == "requested":
            return f"requested: order {order_id} already has a delivery (status {self.current})"
        where = "no delivery exists" if self.current is None else f"the delivery is {self.current}"
        allowed = "|".join(ALLOWED_FROM[self.event_status])
        return f"{self.event_status}: illegal for order {order_id}, {where} (allowed from {allowed})"


def transition(current: str | None, event_status: str) -> Change | Illegal:
    """What an event of `event_status` does to a delivery whose status is `current` (None: none yet).

    `event_status` is one of INCOMING_STATUSES (the parser rejects any other as a schema
    violation); anything else is a programming error and raises ValueError.
    """
    if event_status == "requested":
        if current is None:
            return Change(None, "requested", schedule=True)
        return Illegal(event_status, current)
    allowed = ALLOWED_FROM.get(event_status)
    if allowed is None:
        raise ValueError(f"not an incoming delivery status: {event_status!r}")
    if current not in allowed:
        return Illegal(event_status, current)
    return Change(current, event_status, release=event_status == "cancelled")

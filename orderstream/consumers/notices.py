"""Customer notifications for delivery status changes, rendered when the change is applied."""

from __future__ import annotations

import datetime as dt

# Delivery slots split the working day evenly.
DAY_STARTS_MIN = 8 * 60
DAY_ENDS_MIN = 20 * 60

SUBJECTS = {
    "requested": "We have your delivery request for order {order_id}",
    "scheduled": "Your order {order_id} will be delivered on {slot_date}",
    "dispatched": "Your order {order_id} is on its way",
    "delivered": "Your order {order_id} has been delivered",
    "cancelled": "The delivery of your order {order_id} is cancelled",
}

LEADS = {
    "requested": "We have received the delivery request for your order {order_id} and are looking for a delivery slot.",
    "scheduled": "Your order {order_id} is scheduled for delivery on {slot_date}, between {window}.",
    "dispatched": "Your order {order_id} has left our warehouse and is on its way to you.",
    "delivered": "Your order {order_id} has been delivered. Thank you for shopping with us.",
    "cancelled": "The delivery of your order {order_id} has been cancelled; any items held for it are released.",
}


def slot_window(slot: int, slots_per_day: int) -> str:
    length = (DAY_ENDS_MIN - DAY_STARTS_MIN) // max(slots_per_day, 1)
    start = DAY_STARTS_MIN + slot * length
    end = start + length
    return f"{start // 60:02d}:{start % 60:02d} and {end // 60:02d}:{end % 60:02d}"


def message_id(order_id: str, status: str) -> str:
    return f"<{order_id}.{status}@orderstream>"


def render(
    *,
    order_id: str,
    status: str,
    slot_date: dt.date | None,
    slot: int | None,
    slots_per_day: int,
    address: list[str | None],
) -> tuple[str, str]:
    """Subject and plain-text body of the notification for one status change."""
    fields = {
        "order_id": order_id,
        "slot_date": slot_date.isoformat() if slot_date else "",
        "window": slot_window(slot, slots_per_day) if slot is not None else "",
    }
    subject = SUBJECTS[status].format(**fields)
    lines = ["Hello,", "", LEADS[status].format(**fields), ""]
    where = ", ".join(part for part in address if part)
    if where:
        lines += [f"Delivery address: {where}", ""]
    lines += ["Kind regards,", "orderstream deliveries"]
    return subject, "\n".join(lines) + "\n"

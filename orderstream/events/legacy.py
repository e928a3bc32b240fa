"""Messages written before the typed topics (version 0), read as version 1.

Version 0 carried every contract field of both types as the text it was loaded with, null
where empty: `"quantity": "3"`, `"warehouse_id": null`, `"status": null`. Such messages stay
in the topics after a deploy, so the consumers read them on, with the rules they had for
them: a quantity of ASCII digits (spaces around allowed) is that number, an empty warehouse
is `main`, an empty status `requested`, an empty type the topic's own. Anything else is left
as it is for the model to judge, so a version 0 message is applied, or rejected, as before.
Version 1 values pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from orderstream.events.models import DEFAULT_STATUS, DEFAULT_WAREHOUSE


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _digits(value: object) -> int | object:
    """A quantity of ASCII digits as its number; anything else unchanged."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.isdecimal() and stripped.isascii():
            return int(stripped)
    return value


def as_current(obj: dict[str, Any], event_type: str) -> dict[str, Any]:
    """`obj` as version 1 reads it (a copy where version 0 needed one, else `obj` itself)."""
    if event_type == "inventory":
        quantity, warehouse = obj.get("quantity"), obj.get("warehouse_id")
        if type(quantity) is int and type(warehouse) is str and obj.get("type") == event_type:
            return obj  # version 1: nothing to read differently
        obj = {**obj, "quantity": _digits(quantity)}
        if _blank(warehouse):
            obj["warehouse_id"] = DEFAULT_WAREHOUSE
    elif _blank(obj.get("status")):
        obj = {**obj, "status": DEFAULT_STATUS}
    if obj.get("type") is None:
        obj = {**obj, "type": event_type}
    return obj

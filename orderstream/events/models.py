"""The value of each topic as a pydantic model: the consumers parse with these, and the topics'
JSON Schemas (`schemas/<topic>.v<N>.json`) are generated from them.

A model states what every message of its topic carries. Extra columns of the source ride
along as further properties (the schemas allow them); the consumers ignore them. Changing a
model changes the published schema: see `orderstream.events.schemas` for the versioning.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

ID_MAX_CHARS = 64
QUANTITY_MIN, QUANTITY_MAX = 1, 10_000
DEFAULT_WAREHOUSE = "main"
DEFAULT_STATUS = "requested"
DeliveryStatus = Literal["requested", "dispatched", "delivered", "cancelled"]


def _iso_timestamp(value: object) -> dt.datetime:
    """ISO-8601 text with an offset; numbers, which pydantic would read as Unix times, are refused."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string")  # pydantic reports a ValueError as the field's error
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("must have an offset (Z or ±hh:mm)")
    return parsed


Id = Annotated[str, Field(max_length=ID_MAX_CHARS, pattern=r"\S")]
Text = Annotated[str, Field(pattern=r"\S")]  # not blank
Timestamp = Annotated[dt.datetime, BeforeValidator(_iso_timestamp)]


class OrderEvent(BaseModel):
    """The fields every order event carries."""

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra={"additionalProperties": True})

    event_id: Id = Field(description="unique per event; the idempotency key end to end (also the event_id and ce_id headers)")
    order_id: Id = Field(description="the order; also the message key, so one order's events stay in order")
    type: str = Field(description="the event type: the topic's one")
    created_at: Timestamp = Field(description="when the event happened: RFC 3339 with its offset, as validated")


class InventoryOrder(OrderEvent):
    """A stock reservation request: `quantity` of `sku` at `warehouse_id`."""

    type: Literal["inventory"] = Field(description="the event type: the topic's one")
    sku: Text = Field(description="the stock keeping unit to reserve")
    quantity: int = Field(ge=QUANTITY_MIN, le=QUANTITY_MAX, strict=True, description="how many to reserve")
    warehouse_id: Text = Field(description=f"`{DEFAULT_WAREHOUSE}` where the source left it empty")


class DeliveryOrder(OrderEvent):
    """A delivery request or a later status of the order's delivery."""

    type: Literal["delivery"] = Field(description="the event type: the topic's one")
    customer_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", description="where the customer's notices go")
    address_line: Text
    city: Text
    postal_code: Text
    country: Text = Field(description="ISO 3166-1 alpha-2 code")
    status: DeliveryStatus = Field(description=f"`{DEFAULT_STATUS}` where the source left it empty")


def fields_of(model: type[OrderEvent]) -> tuple[str, ...]:
    """The model's fields in message order: event_id, order_id, type, created_at, then the type's own."""
    return tuple(model.model_fields)

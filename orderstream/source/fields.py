"""The contract's source-event fields, in payload order."""

EVENT_FIELDS: tuple[str, ...] = (
    "event_id",
    "order_id",
    "type",
    "created_at",
    "sku",
    "quantity",
    "warehouse_id",
    "customer_email",
    "address_line",
    "city",
    "postal_code",
    "country",
    "status",
)

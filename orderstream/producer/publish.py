"""Filter and produce: the two named producers over one shared Kafka producer."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pandas as pd

from orderstream.kafka.producer import DeliveryReport, OrderProducer
from orderstream.source.fields import EVENT_FIELDS


def payloads(frame: pd.DataFrame) -> Iterator[bytes]:
    """JSON of every row's fields, extra columns included (contract fields win on a clash).

    A generator: orjson hands each document back in a buffer of several kilobytes, so a
    chunk's worth held at once took hundreds of megabytes; the producer copies each one as
    it is sent and the buffer goes at once.
    """
    # Rows zipped from column lists: DataFrame.to_dict boxes every value and took twice as long.
    columns = [frame[name].tolist() for name in EVENT_FIELDS]
    loads, dumps = orjson.loads, orjson.dumps
    for values, extra in zip(zip(*columns), frame["extra"].tolist()):
        record = dict(zip(EVENT_FIELDS, values))
        yield dumps({**loads(extra), **record} if extra else record)


def publish(frame: pd.DataFrame, event_type: str, topic: str, producer: OrderProducer, report: DeliveryReport) -> pd.DataFrame:
    """Send the rows of exactly `event_type`, answered into `report`; return them (awaiting acks)."""
    rows = frame[frame["type"] == event_type]
    if not rows.empty:
        keys = [k.encode() for k in rows["order_id"]]
        producer.send(topic, keys, payloads(rows), rows["event_id"].tolist(), report)
    return rows


def inventory_orders_producer(
    valid: pd.DataFrame, producer: OrderProducer, report: DeliveryReport, topic: str = "inventory_orders"
) -> pd.DataFrame:
    """Publish only valid `inventory` events, keyed by order_id."""
    return publish(valid, "inventory", topic, producer, report)


def delivery_orders_producer(
    valid: pd.DataFrame, producer: OrderProducer, report: DeliveryReport, topic: str = "delivery_orders"
) -> pd.DataFrame:
    """Publish only valid `delivery` events, keyed by order_id."""
    return publish(valid, "delivery", topic, producer, report)

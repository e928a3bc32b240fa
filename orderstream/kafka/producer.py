"""A thin, typed wrapper around confluent_kafka.Producer for acknowledged batches."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Producer

from orderstream.errors import FatalProducerError
from orderstream.settings import Settings

log = logging.getLogger(__name__)


def producer_config(settings: Settings) -> dict:
    return {
        **settings.kafka_client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "compression.type": "lz4",
        "message.timeout.ms": settings.message_timeout_ms,
    }


@dataclass
class DeliveryReport:
    """What the broker said about every message sent since the last reset."""

    acked: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (event_id, error)
    fatal: KafkaError | None = None

    def on_delivery(self, err: KafkaError | None, msg) -> None:
        """The producer's delivery callback: count acks, record every failure."""
        if err is None:
            self.acked += 1
            return
        event_id = dict(msg.headers() or ()).get("event_id", b"").decode("utf-8", "replace")
        self.failed.append((event_id, err.str()))
        if err.fatal():
            self.fatal = err

    @property
    def failed_ids(self) -> set[str]:
        return {event_id for event_id, _ in self.failed}


class OrderProducer:
    """Idempotent, acks=all producer; created lazily, flushed on exit."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._config = producer_config(settings)
        self._producer: Producer | None = None
        self.report = DeliveryReport()

    def __enter__(self) -> "OrderProducer":
        self._producer = Producer({**self._config, "on_delivery": self._deliver})
        return self

    def __exit__(self, *exc) -> None:
        if self._producer is not None:
            left = self._producer.flush(10)
            if left:
                log.warning("%d messages were still unacknowledged at shutdown", left)
            self._producer = None

    def _deliver(self, err, msg) -> None:
        self.report.on_delivery(err, msg)

    @property
    def client(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("OrderProducer must be used as a context manager")
        return self._producer

    def check_topics(self, topics: Iterable[str]) -> None:
        """Fail fast with a clear message when the broker or a topic is missing."""
        from orderstream.preflight import check_broker

        check_broker(self._settings, list(topics))

    def send(self, topic: str, keys: list, values: list[bytes], event_ids: list[str]) -> None:
        """Queue every message; poll as we go so delivery callbacks keep flowing."""
        producer = self.client
        for key, value, event_id in zip(keys, values, event_ids):
            while True:
                try:
                    producer.produce(topic, value, key, headers=[("event_id", event_id)])
                    break
                except BufferError:
                    producer.poll(0.05)  # local queue full: let acks drain it
            producer.poll(0)
        self._raise_if_fatal()

    def wait_for_acks(self, timeout_s: float) -> DeliveryReport:
        """Flush, then hand back (and reset) the report of everything sent so far."""
        left = self.client.flush(timeout_s)
        report, self.report = self.report, DeliveryReport()
        self._raise_if_fatal(report)
        if left:
            report.failed.append(("", f"{left} messages not acknowledged within {timeout_s:.0f}s"))
        return report

    def _raise_if_fatal(self, report: DeliveryReport | None = None) -> None:
        fatal = (report or self.report).fatal
        if fatal is not None:
            raise FatalProducerError(f"the Kafka producer hit a fatal error and stopped: {fatal.str()}")

"""A thin, typed wrapper around confluent_kafka.Producer for acknowledged batches.

Each batch has its own `DeliveryReport`, handed to every message of the batch as its delivery
callback, so one batch's acknowledgements can be awaited while the next batch is being sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Producer

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
    """What the broker said about each message of one batch."""

    sent: int = 0
    acked: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (event_id, error); "" when unknown
    fatal: KafkaError | None = None
    # Callbacks run in whichever thread polls the producer.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _answered: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._answered = threading.Condition(self._lock)

    def on_delivery(self, err: KafkaError | None, msg) -> None:
        """The delivery callback of each of the batch's messages: count acks, record every failure."""
        with self._lock:
            if err is None:
                self.acked += 1
            else:
                event_id = dict(msg.headers() or ()).get("event_id", b"").decode("utf-8", "replace")
                self.failed.append((event_id, err.str()))
                if err.fatal():
                    self.fatal = err
            if self._all_answered():
                self._answered.notify_all()

    def expect(self, count: int) -> None:
        with self._lock:
            self.sent += count

    def _all_answered(self) -> bool:  # under the lock
        return self.acked + len(self.failed) >= self.sent

    @property
    def unanswered(self) -> int:
        with self._lock:
            return self.sent - self.acked - len(self.failed)

    def wait(self, timeout: float) -> bool:
        """Until every message is answered or `timeout` passed; True iff all were answered."""
        with self._answered:
            return self._answered.wait_for(self._all_answered, timeout)

    @property
    def failed_ids(self) -> set[str]:
        return {event_id for event_id, _ in self.failed}


class OrderProducer:
    """Idempotent, acks=all producer; created lazily, flushed on exit."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._config = producer_config(settings)
        self._producer: Producer | None = None

    def __enter__(self) -> "OrderProducer":
        self._producer = Producer(self._config)
        return self

    def __exit__(self, *exc) -> None:
        if self._producer is not None:
            left = self._producer.flush(10)
            if left:
                log.warning("%d messages were still unacknowledged at shutdown", left)
            self._producer = None

    @property
    def client(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("OrderProducer must be used as a context manager")
        return self._producer

    def check_topics(self, topics: Iterable[str]) -> None:
        """Fail fast with a clear message when the broker or a topic is missing."""
        from orderstream.preflight import check_broker

        check_broker(self._settings, list(topics))

    def send(self, topic: str, keys: list, values: Iterable[bytes], event_ids: list[str], report: DeliveryReport) -> None:
        """Queue one message per key with `report` as its callback; poll as we go so callbacks keep flowing.

        `values` may be a generator: each value is copied into the producer's queue as it is sent.
        """
        producer, on_delivery = self.client, report.on_delivery
        report.expect(len(keys))
        try:
            for key, value, event_id in zip(keys, values, event_ids):
                while True:
                    try:
                        producer.produce(topic, value, key, headers=[("event_id", event_id)], on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)  # local queue full: let acks drain it
                producer.poll(0)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise _fatal(exc.args[0]) from None
            raise
        _raise_if_fatal(report)

    def await_delivery(self, report: DeliveryReport, timeout_s: float) -> DeliveryReport:
        """Serve callbacks until every message of `report` is answered or `timeout_s` passed.

        Messages still unanswered then are recorded as one failure without an event id: their
        fate is unknown, so the caller must treat the whole batch as not acknowledged.
        """
        deadline = time.monotonic() + timeout_s
        while report.unanswered > 0 and (left := deadline - time.monotonic()) > 0:
            self.client.poll(min(0.05, left))  # serves callbacks (another thread may be too)
        if report.unanswered > 0 and not report.wait(0.5):  # a callback running in another thread
            report.failed.append(("", f"{report.unanswered} messages not acknowledged within {timeout_s:.0f}s"))
        _raise_if_fatal(report)
        return report


def _fatal(error: KafkaError) -> FatalProducerError:
    return FatalProducerError(f"the Kafka producer hit a fatal error and stopped: {error.str()}")


def _raise_if_fatal(report: DeliveryReport) -> None:
    if report.fatal is not None:
        raise _fatal(report.fatal)

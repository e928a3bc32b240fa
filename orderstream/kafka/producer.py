"""A thin, typed wrapper around confluent_kafka.Producer for acknowledged messages.

`send` queues a batch of order events, each with its own headers. Each batch has its own
`DeliveryReport`, handed to every message of the batch as its delivery callback, so one
batch's acknowledgements can be awaited while the next batch is being sent. `produce` queues
one message with its own headers and callback (the dead-letter producer's way), and `flush`
waits for all of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from orderstream.errors import FatalProducerError
from orderstream.kafka import clients
from orderstream.settings import Settings

log = logging.getLogger(__name__)

SEND_QUEUE_FULL_POLL_S = 0.05
Headers = list[tuple[str, str | bytes]]


@dataclass
class DeliveryReport:
    """What the broker said about each message of one batch."""

    sent: int = 0
    acked: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (event_id, error); "" when unknown
    fatal: KafkaError | None = None
    # (message number, partition, offset) of each acknowledged message; numbers count from 0 in the order sent.
    positions: list[tuple[int, int, int]] = field(default_factory=list)
    # Callbacks run in whichever thread polls the producer.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _answered: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._answered = threading.Condition(self._lock)

    def on_delivery(self, err: KafkaError | None, msg, *, number: int) -> None:
        """The delivery callback of each of the batch's messages: count acks and where each landed,
        record every failure."""
        with self._lock:
            if err is None:
                self.acked += 1
                self.positions.append((number, msg.partition(), msg.offset()))
            else:
                event_id = dict(msg.headers() or ()).get("event_id", b"").decode("utf-8", "replace")
                self.failed.append((event_id, err.str()))
                if err.fatal():
                    self.fatal = err
            if self._all_answered():
                self._answered.notify_all()

    def expect(self, count: int) -> int:
        """Count `count` more messages; returns the number of the first of them."""
        with self._lock:
            first = self.sent
            self.sent += count
            return first

    def callback(self, number: int) -> Callable[[KafkaError | None, Any], None]:
        """The delivery callback of message `number`: delivery reports carry no headers, so the
        number is what ties an acknowledgement to its event."""
        return partial(self.on_delivery, number=number)

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


class OrderProducer:
    """Idempotent, acks=all producer (`clients.producer_config` with `overrides`); created lazily, flushed on exit."""

    def __init__(self, settings: Settings, **overrides: Any):
        self._settings = settings
        self._overrides = overrides
        self._producer: Producer | None = None

    def __enter__(self) -> OrderProducer:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        left = self.close(10)
        if left:
            log.warning("%d messages were still unacknowledged at shutdown", left)

    def open(self) -> Producer:
        """The librdkafka producer, created on first use (it connects and starts threads)."""
        if self._producer is None:
            self._producer = clients.producer(self._settings, **self._overrides)
        return self._producer

    def close(self, timeout_s: float) -> int:
        """Flush and drop the producer; returns how many messages are still unacknowledged."""
        if self._producer is None:
            return 0
        try:
            return self._producer.flush(timeout_s)
        finally:
            self._producer = None

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def client(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("OrderProducer must be used as a context manager")
        return self._producer

    def check_topics(self, topics: Iterable[str]) -> None:
        """Fail fast with a clear message when the broker or a topic is missing."""
        from orderstream.kafka.check import check_broker

        check_broker(self._settings, list(topics))

    def send(
        self, topic: str, keys: list, values: Iterable[bytes], headers: Iterable[Headers], report: DeliveryReport
    ) -> None:
        """Queue one message per key with `report` as its callback; poll as we go so callbacks keep flowing.

        Messages are numbered in the order sent, across every `send` of the report: the report's
        `positions` name each acknowledged one by its number. `values` and `headers` may be
        generators: each message is copied into the producer's queue as it is sent.
        """
        produce, callback = self.produce, report.callback
        first = report.expect(len(keys))
        try:
            for number, (key, value, message_headers) in enumerate(zip(keys, values, headers, strict=False), first):
                produce(topic, key, value, message_headers, callback(number), SEND_QUEUE_FULL_POLL_S)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise _fatal(exc.args[0]) from None
            raise
        _raise_if_fatal(report)

    def produce(self, topic: str, key, value, headers, on_delivery, queue_full_poll_s: float) -> None:
        """Queue one message, then serve the callbacks already due so that they keep flowing.

        While the local queue is full, serve callbacks for `queue_full_poll_s` at a time: acks
        drain it. librdkafka's refusals (KafkaException) are the caller's to handle.
        """
        producer = self.client
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(queue_full_poll_s)
        producer.poll(0)

    def flush(self, timeout_s: float) -> int:
        """Serve callbacks until every queued message is answered or `timeout_s` passed; returns those left."""
        return self.client.flush(timeout_s)

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

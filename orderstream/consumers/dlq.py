"""Dead-letter producer: the original key, value and headers, plus the error in headers."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException

from orderstream.consumers.messages import Envelope
from orderstream.kafka.producer import OrderProducer
from orderstream.settings import Settings, dlq_topic

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 30.0
# A pill larger than this (or than the DLQ topic accepts) is dead-lettered truncated, with its
# size and digest in headers, so that it can never block the consumer.
MAX_DLQ_VALUE_BYTES = 8 * 1_048_576
TRUNCATED_VALUE_BYTES = 64 * 1024
QUEUE_FULL_POLL_S = 0.1
PRODUCER_OVERRIDES = {
    "linger.ms": 5,
    "message.max.bytes": MAX_DLQ_VALUE_BYTES + 1_048_576,
    # Uncompressed: the broker checks a batch's compressed size against the DLQ topic's
    # max.message.bytes, so a compressible pill too large for the topic would get through
    # whole instead of being refused and sent truncated.
    "compression.type": "none",
}
OUR_HEADERS = frozenset(
    {
        "x-error-class",
        "x-error-message",
        "x-original-topic",
        "x-original-partition",
        "x-original-offset",
        "x-original-timestamp",
        "x-consumer-group",
        "x-value-truncated",
        "x-original-value-bytes",
        "x-original-value-sha256",
    }
)


class DeadLetterUnavailable(Exception):
    """Dead letters could not be delivered; the batch is retried rather than committed."""


def dead_letter_headers(env: Envelope, group: str) -> list[tuple[str, bytes | None]]:
    headers = [(k, v) for k, v in (env.headers or []) if k not in OUR_HEADERS]
    headers += [
        ("x-error-class", (env.error_class or "").encode()),
        ("x-error-message", (env.error_message or "").encode()),
        ("x-original-topic", env.topic.encode()),
        ("x-original-partition", str(env.partition).encode()),
        ("x-original-offset", str(env.offset).encode()),
        ("x-original-timestamp", str(env.timestamp_ms).encode()),
        ("x-consumer-group", group.encode()),
    ]
    return headers


def _truncated(env: Envelope, headers: list[tuple[str, bytes | None]]) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    value = env.value or b""
    return value[:TRUNCATED_VALUE_BYTES], headers + [
        ("x-value-truncated", b"true"),
        ("x-original-value-bytes", str(len(value)).encode()),
        ("x-original-value-sha256", hashlib.sha256(value).hexdigest().encode()),
    ]


class DeadLetterProducer:
    """Idempotent, acks=all producer; `send` returns only once every dead letter is acknowledged."""

    def __init__(self, settings: Settings, group: str) -> None:
        self._group = group
        self._producer = OrderProducer(settings, **PRODUCER_OVERRIDES)  # connects on the first dead letter

    def send(self, dead: Sequence[Envelope]) -> None:
        if not dead:
            return
        producer = self._producer
        producer.open()
        failures: list[tuple[Envelope, KafkaError]] = []
        retry_truncated: list[Envelope] = []

        def delivery(env: Envelope):
            def report(err: KafkaError | None, _msg) -> None:
                if err is None:
                    return
                if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    retry_truncated.append(env)
                else:
                    failures.append((env, err))

            return report

        def produce(env: Envelope, truncate: bool) -> None:
            headers = dead_letter_headers(env, self._group)
            value = env.value
            if truncate or (value is not None and len(value) > MAX_DLQ_VALUE_BYTES):
                value, headers = _truncated(env, headers)
            while True:
                try:
                    producer.produce(dlq_topic(env.topic), env.key, value, headers, delivery(env), QUEUE_FULL_POLL_S)
                    break
                except KafkaException as exc:
                    if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE and not truncate:
                        value, headers = _truncated(env, dead_letter_headers(env, self._group))
                        truncate = True
                        continue
                    raise DeadLetterUnavailable(f"cannot produce to {dlq_topic(env.topic)}: {exc}") from exc

        for env in dead:
            produce(env, truncate=False)
        self._flush()
        if retry_truncated:
            for env in retry_truncated:
                log.warning(
                    "dead letter for %s[%d]@%d is too large for %s; sending it truncated",
                    env.topic, env.partition, env.offset, dlq_topic(env.topic),
                )
                produce(env, truncate=True)
            self._flush()
        if failures:
            env, err = failures[0]
            raise DeadLetterUnavailable(
                f"{len(failures)} dead letters not delivered to {dlq_topic(env.topic)}: {err.str()}"
            )

    def _flush(self) -> None:
        remaining = self._producer.flush(FLUSH_TIMEOUT_S)
        if remaining:
            raise DeadLetterUnavailable(f"{remaining} dead letters still unacknowledged after {FLUSH_TIMEOUT_S}s")

    def close(self) -> None:
        remaining = self._producer.close(FLUSH_TIMEOUT_S)
        if remaining:
            log.error("%d dead letters were not acknowledged at shutdown", remaining)

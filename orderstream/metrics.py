"""Prometheus metrics of every long-running process, served at --metrics-port."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from orderstream.errors import UserError
from orderstream.processes import bind_error
from orderstream.settings import Settings

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
SIZE_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000)

# Consumers
consumed = Counter("orderstream_messages_consumed_total", "Records received from Kafka", ["topic"])
processed = Counter(
    "orderstream_messages_processed_total",
    "Records by outcome: applied, deduplicated (redelivery no-op) or dead_lettered",
    ["topic", "outcome"],
)
consumer_batch_size = Histogram("orderstream_consumer_batch_size", "Records per applied batch", ["topic"], buckets=SIZE_BUCKETS)
consumer_batch_seconds = Histogram(
    "orderstream_consumer_batch_seconds", "Time to apply and commit one batch", ["topic"], buckets=LATENCY_BUCKETS
)
source_to_applied_seconds = Histogram(
    "orderstream_source_to_applied_seconds", "From the event's created_at to its effect committed", ["topic"],
    buckets=LATENCY_BUCKETS,
)
produced_to_applied_seconds = Histogram(
    "orderstream_produced_to_applied_seconds", "From the record's Kafka timestamp to its effect committed", ["topic"],
    buckets=LATENCY_BUCKETS,
)
consumer_retries = Counter("orderstream_consumer_batch_retries_total", "Batches rolled back and retried", ["topic"])

# Producer
produced = Counter("orderstream_produced_total", "Events acknowledged by Kafka", ["topic"])
delivery_errors = Counter("orderstream_producer_delivery_errors_total", "Messages Kafka did not acknowledge", ["topic"])
quarantined = Counter("orderstream_quarantined_total", "Source rows quarantined, by failed rule", ["reason"])
skipped_other = Counter("orderstream_skipped_other_total", "Valid events of a type neither producer sends")
producer_batch_seconds = Histogram(
    "orderstream_producer_batch_seconds", "Extract-to-commit time of one producer batch", buckets=LATENCY_BUCKETS
)
producer_batch_size = Histogram("orderstream_producer_batch_size", "Source rows per producer batch", buckets=SIZE_BUCKETS)

# Validation: the evaluator judges, GX checks the same rows off the latency path
validation_disagreements = Counter(
    "orderstream_validation_disagreements_total",
    "Rows the evaluator and GX judged differently, by rule (must stay 0)", ["reason"],
)
validation_gx_checked = Counter("orderstream_validation_gx_checked_total", "Batches GX checked after the evaluator judged them")
validation_gx_behind = Gauge("orderstream_validation_gx_behind_rows", "Rows judged by the evaluator that GX has not checked yet")

# Notifications, in whichever process sends them
NOTIFICATION_OUTCOMES = ("sent", "failed", "deferred")
notifications = Counter(
    "orderstream_notifications_total",
    "Notifications by outcome: sent, failed (refused for good) or deferred (refused for now, queued again)",
    ["outcome"],
)
for _outcome in NOTIFICATION_OUTCOMES:
    notifications.labels(_outcome)  # at 0 from the start: increase() then sees the first failure too


class LagCollector(Collector):
    """Consumer lag per partition, read from the broker at scrape time (cached briefly)."""

    def __init__(self, settings: Settings, role: str, cache_s: float = 2.0):
        self._settings, self._role, self._cache_s = settings, role, cache_s
        self._at = 0.0
        self._lag: dict[int, int] = {}

    def collect(self):
        from orderstream.kafka.lag import partition_lag

        topic, group = self._settings.topics[self._role], self._settings.groups[self._role]
        if time.monotonic() - self._at > self._cache_s:
            try:
                self._lag = partition_lag(self._settings, group, topic)
                self._at = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the broker blinked
                log.warning("lag unavailable for %s: %s", group, exc)
        family = GaugeMetricFamily("orderstream_consumer_lag", "Records not yet committed by the group",
                                   labels=["topic", "group", "partition"])
        for partition, lag in sorted(self._lag.items()):
            family.add_metric([topic, group, str(partition)], lag)
        yield family


def observe_consumer_batch(topic: str, envs: list, applied: int, deduplicated: int, dead: int, seconds: float) -> None:
    """Count one committed batch; latencies from Kafka timestamps and a sample of created_at."""
    now = time.time()
    consumed.labels(topic).inc(len(envs))
    for outcome, n in (("applied", applied), ("deduplicated", deduplicated), ("dead_lettered", dead)):
        if n:
            processed.labels(topic, outcome).inc(n)
    consumer_batch_size.labels(topic).observe(len(envs))
    consumer_batch_seconds.labels(topic).observe(seconds)
    produced_latency = produced_to_applied_seconds.labels(topic)
    source_latency = source_to_applied_seconds.labels(topic)
    step = max(1, len(envs) // SAMPLE_PER_BATCH)  # bounded cost per batch, unbiased over time
    for env in envs[::step]:
        if env.timestamp_ms > 0:
            produced_latency.observe(max(0.0, now - env.timestamp_ms / 1000))
        created = _created_at(env.value)
        if created is not None:
            source_latency.observe(max(0.0, now - created))


SAMPLE_PER_BATCH = 100


def _created_at(value: bytes | None) -> float | None:
    import datetime as dt

    import orjson

    if value is None:
        return None
    try:
        text = orjson.loads(value)["created_at"]
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except Exception:  # noqa: BLE001 - hostile values (pills, malformed stamps) have no latency to report, whatever they break
        return None


_lag_collector: LagCollector | None = None


def serve(port: int, settings: Settings | None = None, role: str | None = None):
    """Serve /metrics on 127.0.0.1:port; with a role, include its consumer lag. Returns the server."""
    global _lag_collector
    if settings is not None and role is not None:
        if _lag_collector is not None:  # one consumer per process at a time; tests run several
            REGISTRY.unregister(_lag_collector)
        _lag_collector = LagCollector(settings, role)
        REGISTRY.register(_lag_collector)
        _start_at_zero(settings.topics[role])
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        raise _port_taken(port, exc) from None
    log.info("metrics at http://127.0.0.1:%d/metrics", port)
    return server


def _start_at_zero(topic: str) -> None:
    """Show the consumer's counters at 0 before its first batch: a counter that appears with its
    first increment hides that increment from increase() and rate() (the alerts use both)."""
    consumed.labels(topic)
    consumer_retries.labels(topic)
    for outcome in ("applied", "deduplicated", "dead_lettered"):
        processed.labels(topic, outcome)


def ensure_ports_free(ports: Iterable[int]) -> None:
    """Fail before starting anything if one of the metrics `ports` is taken."""
    for port in ports:
        error = bind_error("127.0.0.1", port)  # probed reusing the address, as the metrics server binds
        if error is not None:
            raise _port_taken(port, error)


def _port_taken(port: int, exc: OSError) -> UserError:
    return UserError(f"cannot serve metrics on 127.0.0.1:{port}: {exc.strerror}; choose another --metrics-port")

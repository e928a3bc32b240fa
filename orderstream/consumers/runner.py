"""The batch consumer loop both consumers share.

One batch = one `consume()` call = one database transaction:

1. parse every record (pills are rejected here, before any I/O);
2. in one transaction: claim the batch's event ids in the ledger (a redelivery claims
   nothing and is counted), let the handler apply the claimed events with bulk SQL,
   mark the handler's rejections, produce and flush the dead letters, commit;
3. only then commit offsets (offset + 1 per partition): asynchronously after a batch (a
   synchronous commit can hang inside librdkafka after a broker stall), synchronously when
   partitions are revoked and at shutdown, where the next owner starts from them.

Step 2 runs in a second thread so that the next batch is fetched and parsed while the
database works on this one; transactions still run one at a time and in order, and a
rebalance waits for the batch in flight before it gives up partitions.

A crash anywhere before 3 replays the batch, and the ledger turns the replay into a
counted no-op. A database or DLQ outage rolls back, seeks back to the batch's first
offsets (and drops the batch parsed meanwhile) and retries with backoff; nothing is ever
skipped.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from orderstream import metrics
from orderstream.consumers.dlq import DeadLetterProducer
from orderstream.consumers.messages import Envelope
from orderstream.consumers.primitives import ledger_key, parse_into, records, retryable
from orderstream.consumers.stats import ConsumerStats
from orderstream.db import bulk as sql
from orderstream.errors import UserError
from orderstream.heap import long_lived_heap_frozen
from orderstream.kafka import clients
from orderstream.kafka.groups import TRANSIENT_ERRORS
from orderstream.lifecycle import StopSignal
from orderstream.retry import Backoff
from orderstream.settings import Settings

log = logging.getLogger(__name__)

# Failover after a crashed member takes at most this long (librdkafka's default is 45 s).
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 2_000
CLOSE_TIMEOUT_S = 60.0
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 10.0
METADATA_TIMEOUT_S = 10.0
GC_YOUNG_THRESHOLD = 50_000


class ConsumerFatalError(UserError):
    """librdkafka reported a fatal error; the consumer cannot continue."""


class Handler(Protocol):
    """What a consumer role plugs into the loop."""

    role: str

    def parse(self, value: bytes | None) -> Any:
        """The event in a record value; raises `Rejected` for one that can never take effect."""

    def apply(self, session: Session, events: Sequence[Envelope], now: dt.datetime) -> list[Envelope]:
        """Apply claimed, parsed events in order with bulk SQL in the caller's transaction.

        Returns the envelopes rejected on the database state (their `rejection` set);
        they take no effect and are dead-lettered. Raise `sql.RetryBatch` to roll back.
        """


class BatchConsumer:
    """Runs one group member until stopped, or until caught up when draining."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        handler: Handler,
        *,
        drain: bool,
        stop: StopSignal,
        stats: ConsumerStats,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.handler = handler
        self.topic = settings.topics[handler.role]
        self.group = settings.groups[handler.role]
        self.drain = drain
        self.stop = stop
        self.stats = stats
        self.client_config = dict(client_config or {})
        self.dlq = DeadLetterProducer(settings, self.group)
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None
        # Offsets whose batch is durable in the DB but whose commit to Kafka has not succeeded,
        # and those of them asked for asynchronously and not yet answered.
        self._pending: dict[int, int] = {}
        self._committing: dict[int, int] = {}
        # The batch whose transaction runs in the applier thread, and its outcome.
        self._in_flight: tuple[list[Envelope], Future] | None = None
        self._backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)

    # -- Kafka plumbing -------------------------------------------------------------

    def _new_consumer(self) -> Consumer:
        overrides = {
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "queued.max.messages.kbytes": self.settings.consume_prefetch_kbytes,
            "on_commit": self._on_commit,
        } | ({} if self.drain else clients.LATENCY_CONSUMER) | self.client_config
        # One client id per process: `kafka-consumer-groups --describe` shows which member is which.
        client_id = f"orderstream-{self.handler.role}-{os.getpid()}"
        return clients.consumer(self.settings, self.group, client_id, **overrides)

    def _close(self, consumer: Consumer) -> None:
        """Leave the group, waiting at most CLOSE_TIMEOUT_S: the offsets are committed already, and a
        close stuck in librdkafka (seen once for a static member whose predecessors were killed)
        must not hold the process for ever."""
        closer = threading.Thread(target=consumer.close, name=f"{self.group}-close", daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            log.error("%s: the Kafka consumer did not close within %.0f s; going on without it", self.group, CLOSE_TIMEOUT_S)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.group, [p.partition for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the batch in flight, then commit what is done for the revoked partitions."""
        revoked = {p.partition for p in partitions if p.topic == self.topic}
        log.info("%s: revoked %s", self.group, sorted(revoked))
        self._settle(retry=False)  # a failed batch is replayed from the last commit by the next owner
        self._commit_pending(only=revoked, wait=True)
        for p in revoked:
            self._pending.pop(p, None)
            self._committing.pop(p, None)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {p.partition for p in partitions if p.topic == self.topic}
        log.warning("%s: lost %s; their next owner replays from the last commit", self.group, sorted(lost))
        for p in lost:
            self._pending.pop(p, None)
            self._committing.pop(p, None)

    def _commit_pending(self, only: set[int] | None = None, *, wait: bool = False) -> None:
        """Commit the pending offsets (of `only`); without `wait`, only those not asked for yet."""
        offsets = [
            TopicPartition(self.topic, p, o)
            for p, o in self._pending.items()
            if (only is None or p in only) and (wait or self._committing.get(p) != o)
        ]
        if not offsets or self._consumer is None:
            return
        try:
            if wait:
                self._committed(None, self._consumer.commit(offsets=offsets, asynchronous=False) or offsets)
                return
            self._committing.update((tp.partition, tp.offset) for tp in offsets)
            self._consumer.commit(offsets=offsets, asynchronous=True)  # answered in `_on_commit`
        except KafkaException as exc:
            self._committed(exc.args[0], offsets)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._committed(err, partitions)

    def _committed(self, err: KafkaError | str | None, partitions: list[TopicPartition]) -> None:
        """What the coordinator answered to a commit: done offsets leave `_pending`."""
        failed = [tp for tp in partitions if err is not None or tp.error is not None]
        for tp in partitions:
            if tp.topic != self.topic:
                continue
            if self._committing.get(tp.partition) == tp.offset:
                del self._committing[tp.partition]
            if err is None and tp.error is None and self._pending.get(tp.partition) == tp.offset:
                del self._pending[tp.partition]
        if failed:
            self.stats.commit_failures += 1
            reason = err if err is not None else failed[0].error
            log.warning(
                "%s: offset commit failed (%s); it is retried, and replays are deduplicated", self.group, reason
            )

    def _collect(self, msgs: list[Message]) -> list[Envelope]:
        """Envelopes of the batch's records, each parsed or rejected (the hot loop: keep it lean)."""
        envs: list[Envelope] = []
        append = envs.append
        parse = self.handler.parse
        for msg in records(msgs, ConsumerFatalError, self._kafka_error):
            env = Envelope(
                msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers(),
                msg.timestamp()[1], "",
            )
            parse_into(env, parse)
            env.ledger_key = ledger_key(env)
            append(env)
        return envs

    def _next_batch(self, consumer: Consumer) -> list[Message]:
        """The next batch, cut by count or by time: the first record (waiting up to
        `consume_poll_timeout_s` for it), then whatever arrives within `consume_batch_wait_s` of it,
        up to `consume_batch_size` records. On a backlog the batch fills from the prefetch queue
        at once; at a trickle a record waits for no fuller batch (the batch in flight in the
        applier thread lets the next one gather meanwhile)."""
        first = consumer.consume(num_messages=1, timeout=self.settings.consume_poll_timeout_s)
        if not first or self.settings.consume_batch_size <= 1:
            return first
        rest = consumer.consume(num_messages=self.settings.consume_batch_size - 1, timeout=self.settings.consume_batch_wait_s)
        return first + rest

    def _kafka_error(self, err: KafkaError) -> None:
        self.stats.kafka_errors += 1
        log.warning("%s: consumer error: %s", self.group, err.str())

    def _drained(self) -> bool:
        try:
            return self._caught_up()
        except KafkaException as exc:  # the broker did not answer: ask again at the next idle poll
            # A coordinator that is moving or still loading (as on a fresh broker) answers by itself soon.
            transient = exc.args[0].code() in TRANSIENT_ERRORS
            log.log(logging.DEBUG if transient else logging.WARNING, "%s: cannot read the group's lag yet (%s)",
                    self.group, exc)
            return False

    def _caught_up(self) -> bool:
        """True once the group's committed offsets equal the end offsets of every partition.

        End offsets come from an AdminClient: on the consumer's connection to the leader
        that request would queue behind its long-polling fetches.
        """
        if self._admin is None:
            self._admin = clients.admin_client(self.settings)
        admin = self._admin
        meta = admin.list_topics(self.topic, timeout=METADATA_TIMEOUT_S).topics.get(self.topic)
        if meta is None or meta.error is not None:
            return True  # no topic, nothing to consume
        tps = [TopicPartition(self.topic, p) for p in sorted(meta.partitions)]
        ends = {
            tp.partition: f.result().offset
            for tp, f in admin.list_offsets(
                {tp: OffsetSpec.latest() for tp in tps}, request_timeout=METADATA_TIMEOUT_S
            ).items()
        }
        starts = {
            tp.partition: f.result().offset
            for tp, f in admin.list_offsets(
                {tp: OffsetSpec.earliest() for tp in tps}, request_timeout=METADATA_TIMEOUT_S
            ).items()
        }
        # The group's commits through the consumer's own coordinator connection: an
        # AdminClient's ListConsumerGroupOffsets crashes librdkafka 2.16 (NULL cgrp in
        # rd_kafka_handle_OffsetFetch) when the coordinator answers with a retriable error,
        # as a freshly started broker does.
        assert self._consumer is not None
        committed = {tp.partition: tp.offset for tp in self._consumer.committed(tps, timeout=METADATA_TIMEOUT_S)}
        for partition, end in ends.items():
            position = committed.get(partition, -1)
            if position < 0:
                position = starts[partition]
            if position < end:
                return False
        return True

    def _rewind(self, envs: list[Envelope]) -> None:
        assert self._consumer is not None
        first: dict[int, int] = {}
        for env in envs:
            first.setdefault(env.partition, env.offset)
        for partition, offset in first.items():
            try:
                self._consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its next owner replays it
                log.info("%s: cannot seek partition %d back (%s)", self.group, partition, exc)

    # -- the batch ------------------------------------------------------------------

    def _apply(self, envs: list[Envelope]) -> tuple[int, int, int, float]:
        """One transaction for the batch; returns (applied, deduplicated, dead_lettered, seconds)."""
        started = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        unique: dict[str, Envelope] = {}
        for env in envs:
            unique.setdefault(env.ledger_key, env)
        firsts = list(unique.values())
        ledger_rows = [
            {
                "event_id": env.ledger_key,
                "partition": env.partition,
                "offset": env.offset,
                "outcome": "applied" if env.rejection is None else "dead_lettered",
                "error_class": env.error_class,
                "error_message": env.error_message,
            }
            for env in firsts
        ]
        ledger_constants = {"consumer_group": self.group, "topic": self.topic, "processed_at": now}
        with Session(self.engine) as session, session.begin():
            claimed_ids = sql.claim_events(session, ledger_rows, ledger_constants)
            claimed = [env for env in firsts if env.ledger_key in claimed_ids]
            deduplicated = len(envs) - len(claimed)
            sql.increment_counter(session, self.group, "deduplicated", deduplicated)
            valid = [env for env in claimed if env.rejection is None]
            rejected_late = self.handler.apply(session, valid, now) if valid else []
            sql.mark_dead_lettered(session, self.group, rejected_late)
            dead = [env for env in claimed if env.rejection is not None]
            self.dlq.send(dead)  # acknowledged before the transaction commits
        return len(claimed) - len(dead), deduplicated, len(dead), time.perf_counter() - started

    def _settle(self, parsed: list[Envelope] | None = None, *, retry: bool = True) -> bool:
        """Wait for the batch in flight; on success count it and commit its offsets.

        A retryable failure rolled it back: with `retry`, seek back to its first offsets
        (and to those of `parsed`, the batch fetched meanwhile, which the caller drops) and
        back off. False iff it failed.
        """
        if self._in_flight is None:
            return True
        envs, outcome = self._in_flight
        self._in_flight = None
        try:
            applied, deduplicated, dead, seconds = outcome.result()
        except Exception as exc:
            if not retryable(exc):
                raise
            self.stats.retries += 1
            metrics.consumer_retries.labels(self.topic).inc()
            log.warning(
                "%s: batch of %d rolled back (%s: %s); %s",
                self.group, len(envs), type(exc).__name__, str(exc).splitlines()[0][:200],
                f"retrying in {self._backoff.delay:.1f}s" if retry else "replayed from the last commit",
            )
            if retry:
                self._rewind(envs + (parsed or []))
                self._backoff.wait(self.stop.wait)
            return False
        self._backoff.reset()
        for env in envs:
            self._pending[env.partition] = env.offset + 1
        self._commit_pending()
        self.stats.applied += applied
        self.stats.deduplicated += deduplicated
        self.stats.dead_lettered += dead
        self.stats.record_batch(len(envs))
        metrics.observe_consumer_batch(self.topic, envs, applied, deduplicated, dead, seconds)
        # The batch's SQLAlchemy statements and results sit in reference cycles holding its
        # JSON parameters (~350 bytes an event); at the lax thresholds of `run` they would wait
        # for a rare full collection and memory would grow with the backlog. With the
        # long-lived heap frozen, a full collection only walks the last batch or two.
        gc.collect()
        return True

    def run(self) -> ConsumerStats:
        # A batch allocates tens of thousands of short-lived, acyclic objects (envelopes, rows): at
        # the default thresholds the collector ran hundreds of times a batch; now about once.
        with long_lived_heap_frozen(GC_YOUNG_THRESHOLD):
            return self._run()

    def _run(self) -> ConsumerStats:
        consumer = self._consumer = self._new_consumer()
        applier = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.handler.role}-apply")
        try:
            consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            while not self.stop.is_set():
                msgs = self._next_batch(consumer)
                if not msgs:
                    self._settle()
                    self._commit_pending()
                    if self.drain and self._in_flight is None and not self._pending and self._drained():
                        log.info("%s: caught up, draining done", self.group)
                        break
                    continue
                envs = self._collect(msgs)
                if not envs:
                    continue
                self.stats.consumed += len(envs)
                if self._settle(envs):
                    self._in_flight = (envs, applier.submit(self._apply, envs))
            self._settle(retry=False)
            self._commit_pending(wait=True)
        finally:
            if self._in_flight is not None:  # an error above: let the transaction end before closing
                self._in_flight[1].exception()
                self._in_flight = None
            applier.shutdown(wait=True)
            try:
                self._close(consumer)
            finally:
                self._consumer = None
                self._admin = None
                self.dlq.close()
                self.stats.stopped_at = time.monotonic()
        return self.stats

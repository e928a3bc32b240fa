"""Re-consume a topic from a timestamp: reset one consumer group's committed offsets.

For every partition of the role's topic, the new committed offset is the earliest offset
whose record timestamp is at or after the given time (Kafka's offsets-for-times); a
partition with no such record gets its end offset (nothing of it is re-read). The consumers
then re-read from there and the processed-events ledger turns every re-delivered event that
already took effect into a counted no-op (`consumer_counters.deduplicated`).

Kafka only lets a group's offsets change while the group has no active member, so this is
refused, with the members named, while a consumer of the group is running. Offsets that are
already where they would be set are left alone, so a second run changes nothing.

Committed offsets are read and written through a plain Consumer of the group (assigned, never
subscribed, so it never becomes a member), not the AdminClient: librdkafka's admin
ListConsumerGroupOffsets can crash the process when the group's coordinator moves or is not
known yet (confluentinc/librdkafka#5040).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from orderstream.errors import BrokerUnavailable, UserError
from orderstream.kafka.address import bootstrap_servers
from orderstream.kafka.clients import admin_client
from orderstream.kafka.groups import group_committed, group_consumer, retry_transient
from orderstream.kafka.lag import end_offsets
from orderstream.ops.common import run_logger
from orderstream.settings import Settings

TIMEOUT_S = 15.0


class GroupActive(UserError):
    """The group has running members; Kafka would reject the reset (and they would race it)."""


@dataclass
class PartitionReset:
    partition: int
    committed_before: int | None  # None: the group had no committed offset
    offset: int  # committed now
    end: int

    @property
    def to_reread(self) -> int:
        """Records between the new offset and the old committed position (or the end)."""
        old = self.end if self.committed_before is None else self.committed_before
        return max(0, old - self.offset)


@dataclass
class OffsetReset:
    role: str
    group: str
    topic: str
    timestamp: str  # ISO-8601, UTC
    dry_run: bool
    changed: bool = False
    partitions: list[PartitionReset] = field(default_factory=list)

    @property
    def to_reread(self) -> int:
        return sum(p.to_reread for p in self.partitions)


def parse_timestamp(value: str | dt.datetime | None) -> dt.datetime:
    """An ISO-8601 timestamp with an offset (e.g. `2026-11-25T10:00:00Z`), as UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError("a timestamp is required, e.g. 2026-11-25T10:00:00Z")
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            raise UserError(f"timestamp {value!r} is not ISO-8601, e.g. 2026-11-25T10:00:00Z") from None
    if parsed.tzinfo is None:
        raise UserError(f"timestamp {value!s} has no UTC offset; add one, e.g. Z or +01:00")
    return parsed.astimezone(dt.UTC)


def active_members(admin: AdminClient, group: str) -> list[str]:
    """`client_id@host` of every member the group has now (none for an unknown group)."""
    try:
        description = admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group].result()
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot describe consumer group {group}: {exc.args[0].str()}") from None
    return [f"{m.client_id}@{m.host}" for m in description.members or []]


def _commit(settings: Settings, group: str, offsets: list[TopicPartition]) -> None:
    consumer = group_consumer(settings, group)
    try:
        result = retry_transient(
            lambda: consumer.commit(offsets=offsets, asynchronous=False), f"commit offsets of {group}"
        )
    except KafkaException as exc:
        raise UserError(
            f"Kafka refused to reset the offsets of group {group}: {exc.args[0].str()} "
            "(a member may have joined meanwhile: stop its consumers and retry)"
        ) from None
    finally:
        consumer.close()
    failed = [tp for tp in result or [] if tp.error is not None]
    if failed:
        raise UserError(f"Kafka refused to reset some offsets of group {group}: {failed}")


def _offsets_for_time(admin: AdminClient, topic: str, partitions: list[int], when_ms: int) -> dict[int, int]:
    request = {TopicPartition(topic, p): OffsetSpec.for_timestamp(when_ms) for p in partitions}
    result = {}
    for tp, future in admin.list_offsets(request, request_timeout=TIMEOUT_S).items():
        result[tp.partition] = future.result().offset  # -1: no record at or after the time
    return result


def reset_offsets_to_timestamp(
    settings: Settings, role: str, timestamp: str | dt.datetime | None, *, dry_run: bool = False
) -> OffsetReset:
    if role not in settings.groups:
        raise UserError(f"unknown role {role!r}: use inventory or delivery")
    when = parse_timestamp(timestamp)
    log = run_logger(__name__)
    group, topic = settings.groups[role], settings.topics[role]
    admin = admin_client(settings)
    members = active_members(admin, group)
    if members:
        raise GroupActive(
            f"consumer group {group} has {len(members)} active member(s) ({', '.join(members[:5])}); "
            f"stop the {role} consumers first, then reset its offsets"
        )
    ends = end_offsets(admin, topic, timeout=TIMEOUT_S)
    if not ends:
        raise UserError(f"topic {topic} does not exist on {bootstrap_servers(settings)}")
    try:
        at_time = _offsets_for_time(admin, topic, sorted(ends), int(when.timestamp() * 1000))
    except KafkaException as exc:
        raise BrokerUnavailable(f"Kafka did not answer: {exc.args[0].str()}") from None
    before = group_committed(settings, group, topic, sorted(ends))
    reset = OffsetReset(role=role, group=group, topic=topic, timestamp=when.isoformat(), dry_run=dry_run)
    for p in sorted(ends):
        offset = at_time.get(p, -1)
        offset = ends[p] if offset < 0 else offset
        reset.partitions.append(PartitionReset(p, before.get(p), offset, ends[p]))
    changes = [r for r in reset.partitions if r.committed_before != r.offset]
    reset.changed = bool(changes)
    if changes and not dry_run:
        _commit(settings, group, [TopicPartition(topic, r.partition, r.offset) for r in changes])
    log.info(
        "%s group %s on %s to %s: %d partitions changed, %d records to re-read",
        "would reset" if dry_run else "reset", group, topic, reset.timestamp, len(changes), reset.to_reread,
    )
    return reset

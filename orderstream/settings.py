"""The one place that reads the environment; everything else takes a Settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

INVENTORY_TOPIC = "inventory_orders"
DELIVERY_TOPIC = "delivery_orders"
DLQ_SUFFIX = ".dlq"
KAFKA_VERSION = "4.3.1"


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    orderstream_home: Path = Field(default=Path(".orderstream"))
    database_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    smtp_url: str | None = None
    # Confluent-compatible Schema Registry: values in its wire format instead of plain JSON.
    schema_registry_url: str | None = None

    # Topic names are settings so tests can run on their own uuid topics.
    inventory_topic: str = INVENTORY_TOPIC
    delivery_topic: str = DELIVERY_TOPIC
    inventory_group: str = "inventory"
    delivery_group: str = "delivery"
    topic_partitions: int = 6

    # Local broker
    kafka_port: int = 0  # 0: pick a free port once and remember it in the home
    kafka_heap: str = "512m"

    # Security for external clusters
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None

    # Producer
    # Rows per batch of a batch pass. GX no longer runs on the hot path (its ~200 ms per call
    # forced 50k-row chunks), so chunks are small enough to keep the producer's memory low.
    produce_chunk_size: int = 10_000
    # Continuous mode: at most this many rows per batch, so that a burst does not hold back
    # the acknowledgement of its first rows.
    produce_continuous_chunk_size: int = 2_000
    # Continuous mode on SQLite (or without a PostgreSQL listener): how long it sleeps when
    # nothing is pending, a floor under its latency there.
    produce_poll_interval_s: float = 0.05
    # Continuous mode: woken by a notification of new rows on PostgreSQL, it still looks this often;
    # and a pass this often reads from the first id (rows pending again below those read, see producer/run.py).
    produce_safety_poll_s: float = 1.0
    # Continuous mode: passes start at most this often. Each pass has a fixed cost (validation,
    # two statements, a commit): at one pass per source commit the producer would spin on a core
    # at any steady rate, starving the consumers of the same machine. An idle producer woken by
    # new rows starts at once.
    produce_gather_s: float = 0.0
    message_timeout_ms: int = 120_000
    producer_lock_timeout_s: float = 30.0

    # Validation: the evaluator judges every row on the hot path; GX checks the same rows and
    # keeps the Data Docs, in a background process ("background") or before the batch is sent
    # ("inline": GX's ~200 ms per call back on the latency path).
    validation_gx_check: Literal["background", "inline"] = "background"
    # A batch waits to be judged while GX is this many rows behind: bounds the worker's memory.
    validation_gx_max_rows_behind: int = 100_000
    # Batches waiting together are checked in one GX run of up to this many rows.
    validation_gx_merge_rows: int = 50_000
    # GX runs at most this often (its ~200 ms fixed cost, back to back, would keep a core busy);
    # the end of a pass asks for the last check at once.
    validation_gx_gather_s: float = 5.0
    # How long a produce pass waits at its end for GX to check its last batches.
    validation_gx_drain_timeout_s: float = 300.0

    # Consumers
    consume_batch_size: int = 5_000
    # How long a consumer waits for the first record of its next batch (idle, it then does its
    # housekeeping: offset commits, the drain check). Not a floor under latency: a record ends the wait.
    consume_poll_timeout_s: float = 0.05
    # After a batch's first record, how long it may wait for more (0: take what has arrived).
    consume_batch_wait_s: float = 0.0
    # librdkafka's prefetch queue: a few batches ahead is enough, and it bounds memory on a backlog.
    consume_prefetch_kbytes: int = 16_384

    # Delivery scheduling
    daily_capacity_per_area: int = 200
    slots_per_day: int = 4
    scheduling_horizon_days: int = 7

    @cached_property
    def home(self) -> Path:
        return self.orderstream_home.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'orderstream.db'}"

    @property
    def topics(self) -> dict[str, str]:
        """Event type -> topic."""
        return {"inventory": self.inventory_topic, "delivery": self.delivery_topic}

    @property
    def groups(self) -> dict[str, str]:
        return {"inventory": self.inventory_group, "delivery": self.delivery_group}

    @property
    def mail_dir(self) -> Path:
        return self.home / "mail"

    @property
    def gx_dir(self) -> Path:
        return self.home / "gx"

    def as_env(self) -> dict[str, str]:
        """These settings as the environment variables that rebuild them (`Settings()` in a child).

        Every field that is not None, by its variable name, secrets in the clear (for a child
        process's environment only; never log it); ORDERSTREAM_HOME resolved.
        """
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[name.upper()] = str(value)
        env["ORDERSTREAM_HOME"] = str(self.home)
        return env

    def subprocess_env(self, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
        """The whole environment of an `orderstream` child process working with these settings.

        `base` (default: this process's environment) without any setting's variable, so a
        setting that is None here cannot come back from it; then `as_env()`, then `extra`.
        """
        env = dict(os.environ if base is None else base)
        for name in type(self).model_fields:
            env.pop(name.upper(), None)
        env.update(self.as_env())
        env.update(extra)
        return env

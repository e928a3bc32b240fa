"""In-process counters of one consumer; the Prometheus wiring reads them later."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field


@dataclass
class ConsumerStats:
    role: str
    group: str
    consumed: int = 0  # records received, redeliveries and pills included
    applied: int = 0  # events that took effect in this process
    deduplicated: int = 0  # redelivered events skipped (already in the ledger, or twice in a batch)
    dead_lettered: int = 0  # events sent to the DLQ and recorded as dead_lettered
    batches: int = 0  # batches committed
    batch_size_max: int = 0
    batch_size_sum: int = 0
    retries: int = 0  # batches rolled back and re-consumed (database or DLQ outage)
    commit_failures: int = 0  # offset commits that failed after the DB commit (replays are no-ops)
    kafka_errors: int = 0  # non-fatal consumer errors reported by librdkafka
    started_at: float = field(default_factory=time.monotonic)
    stopped_at: float | None = None

    def record_batch(self, size: int) -> None:
        self.batches += 1
        self.batch_size_sum += size
        self.batch_size_max = max(self.batch_size_max, size)

    @property
    def elapsed_s(self) -> float:
        return (self.stopped_at or time.monotonic()) - self.started_at

    @property
    def batch_size_mean(self) -> float:
        return self.batch_size_sum / self.batches if self.batches else 0.0

    def __str__(self) -> str:
        rate = self.applied / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"{self.role} consumer ({self.group}): consumed {self.consumed}, applied {self.applied}, "
            f"deduplicated {self.deduplicated}, dead-lettered {self.dead_lettered} in {self.elapsed_s:.1f} s "
            f"({rate:,.0f} applied/s; {self.batches} batches, mean {self.batch_size_mean:.0f}); "
            f"retries {self.retries}, commit failures {self.commit_failures}, Kafka errors {self.kafka_errors}"
        )

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("started_at")
        data.pop("stopped_at")
        data["elapsed_s"] = round(self.elapsed_s, 3)
        data["batch_size_mean"] = round(self.batch_size_mean, 1)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ConsumerStats:
        names = {f for f in cls.__dataclass_fields__ if f not in ("started_at", "stopped_at")}
        stats = cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]
        stats.stopped_at = stats.started_at + float(data.get("elapsed_s", 0.0))  # type: ignore[arg-type]
        return stats

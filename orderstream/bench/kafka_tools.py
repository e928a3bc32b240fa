"""Kafka's own perf tools (the `kafka-tools` jar of the local runtime), run and parsed.

* `ProducerPerformance` (kafka-producer-perf-test): its summary line
  `N records sent, R records/sec (M MB/sec), ...` gives R.
* `ConsumerPerformance` (kafka-consumer-perf-test): the CSV line after its header; `nMsg.sec`
  is records over the whole run (group join included), `fetch.nMsg.sec` without the join.
* `EndToEndLatency`: one record at a time, produced and consumed; `Avg latency: X ms` and
  `Percentiles: 50th = a, 99th = b, 99.9th = c` (milliseconds).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from orderstream.errors import UserError
from orderstream.settings import Settings
from orderstream.stack.local import run_kafka_tool

PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
END_TO_END = "org.apache.kafka.tools.EndToEndLatency"

_PRODUCER_SUMMARY = re.compile(
    r"^(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mb>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th, (?P<p999>\d+) ms 99.9th",
    re.MULTILINE,
)
_E2E_AVG = re.compile(r"Avg latency: (?P<avg>[\d.]+) ms")
_E2E_PCT = re.compile(r"Percentiles: 50th = (?P<p50>[\d.]+), 99th = (?P<p99>[\d.]+), 99\.9th = (?P<p999>[\d.]+)")


class ToolFailed(UserError):
    pass


@dataclass(frozen=True)
class ProducerPerfResult:
    records: int
    per_s: float
    mb_per_s: float
    avg_latency_ms: float
    p99_latency_ms: float


@dataclass(frozen=True)
class ConsumerPerfResult:
    records: int
    per_s: float  # nMsg.sec: whole run, group join included
    fetch_per_s: float  # fetch.nMsg.sec: without the join
    rebalance_ms: float


@dataclass(frozen=True)
class EndToEndResult:
    records: int
    avg_ms: float
    p50_ms: float
    p99_ms: float
    p999_ms: float


def _run(settings: Settings, main_class: str, args: list[str], timeout: float) -> str:
    result = run_kafka_tool(settings, main_class, args, timeout=timeout)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise ToolFailed(f"{main_class.rsplit('.', 1)[1]} exited with {result.returncode}: {' | '.join(tail)}")
    return result.stdout


def parse_producer_perf(output: str) -> ProducerPerfResult:
    matches = list(_PRODUCER_SUMMARY.finditer(output))
    if not matches:
        raise ToolFailed(f"no ProducerPerformance summary line in: {output[-500:]!r}")
    m = matches[-1]  # the final summary (a warm-up run prints its own first)
    return ProducerPerfResult(
        records=int(m["records"]),
        per_s=float(m["rate"]),
        mb_per_s=float(m["mb"]),
        avg_latency_ms=float(m["avg"]),
        p99_latency_ms=float(m["p99"]),
    )


def parse_consumer_perf(output: str) -> ConsumerPerfResult:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("start.time"):
            header = [h.strip() for h in line.split(",")]
            if index + 1 >= len(lines):
                break
            row = dict(zip(header, (v.strip() for v in lines[index + 1].split(","))))
            return ConsumerPerfResult(
                records=int(row["data.consumed.in.nMsg"]),
                per_s=float(row["nMsg.sec"]),
                fetch_per_s=float(row["fetch.nMsg.sec"]),
                rebalance_ms=float(row["rebalance.time.ms"]),
            )
    raise ToolFailed(f"no ConsumerPerformance result line in: {output[-500:]!r}")


def parse_end_to_end(output: str, records: int) -> EndToEndResult:
    avg, pct = _E2E_AVG.search(output), _E2E_PCT.search(output)
    if avg is None or pct is None:
        raise ToolFailed(f"no EndToEndLatency summary in: {output[-500:]!r}")
    return EndToEndResult(
        records=records,
        avg_ms=float(avg["avg"]),
        p50_ms=float(pct["p50"]),
        p99_ms=float(pct["p99"]),
        p999_ms=float(pct["p999"]),
    )


def producer_perf(
    settings: Settings,
    bootstrap: str,
    topic: str,
    records: int,
    record_size: int,
    extra_props: dict[str, str] | None = None,
    timeout: float = 900,
) -> ProducerPerfResult:
    """As many records as fast as possible, with acks=all and idempotence like the pipeline
    (and `extra_props`, Java producer settings, if given)."""
    extra = [f"{k}={v}" for k, v in (extra_props or {}).items()]
    output = _run(
        settings,
        PRODUCER_PERF,
        [
            "--bootstrap-server", bootstrap, "--topic", topic,
            "--num-records", str(records), "--record-size", str(record_size), "--throughput", "-1",
            "--producer-props", "acks=all", "enable.idempotence=true", *extra,
        ],
        timeout,
    )
    return parse_producer_perf(output)


def consumer_perf(settings: Settings, bootstrap: str, topic: str, records: int, timeout: float = 900) -> ConsumerPerfResult:
    output = _run(
        settings,
        CONSUMER_PERF,
        [
            "--bootstrap-server", bootstrap, "--topic", topic, "--num-records", str(records),
            "--group", f"bench-perf-{uuid.uuid4().hex[:8]}", "--timeout", "30000",
        ],
        timeout,
    )
    return parse_consumer_perf(output)


def end_to_end(
    settings: Settings, bootstrap: str, topic: str, records: int, record_size: int, timeout: float = 900
) -> EndToEndResult:
    output = _run(
        settings,
        END_TO_END,
        [
            "--bootstrap-server", bootstrap, "--topic", topic, "--num-records", str(records),
            "--producer-acks", "all", "--record-size", str(record_size),
        ],
        timeout,
    )
    return parse_end_to_end(output, records)

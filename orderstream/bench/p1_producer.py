"""P1: orders/s through the producer pipeline, against Kafka's producer perf test and a bare
confluent-kafka loop, on the same broker in the same run.

One repeat, in a fresh workspace:

1. load N inventory events of the seed data into the source table (COPY, not timed) and
   read them back as the pipeline will send them (to know the payloads and their size);
2. **pipeline**: time `produce_orders(settings)` (the Prefect flow, batch mode, default
   chunk size) from the call to its return, i.e. through extraction from PostgreSQL, GX
   validation, filtering, production with acks=all and idempotence, every acknowledgement
   and the progress-mark commit of the last batch; it must report N produced;
3. **perf test**: `ProducerPerformance` with N records of the pipeline's mean value size,
   `acks=all enable.idempotence=true`, unthrottled, to a topic of the same partition count;
   the rest at the Java client's defaults (the figure `ratio` is against). Once more with the
   pipeline producer's batching and compression too (`linger.ms`, `batch.size`,
   `compression.type` of `producer_config`): `perf_test_same_config_per_s`, for reference;
4. **bare**: the same N (key, value, header) messages through one `confluent_kafka.Producer`
   with `producer_config(settings)`: `produce()` + `poll(0)` per message, then `flush()`,
   timed from the first produce to the end of the flush; it must see N acks.

The three run one after another, in an order rotated between repeats. The process is warmed
up first (Prefect's server started, GX context built), as a long-running host would be.
`ratio` is the median of the per-repeat ratios pipeline / perf test.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from orderstream.bench.common import check_count, log, median, rounded, warm_up
from orderstream.bench.data import BareProducer, copy_events, inventory_frames, source_messages
from orderstream.bench.env import BenchEnv, Workspace
from orderstream.bench.kafka_tools import producer_perf
from orderstream.kafka.clients import producer_config

GOAL_RATIO = 0.5


@dataclass
class P1Run:
    events: int
    pipeline_per_s: float
    perf_test_per_s: float
    perf_test_same_config_per_s: float
    bare_python_per_s: float
    avg_value_bytes: float
    avg_key_bytes: float
    avg_header_bytes: float
    pipeline_cpu: dict | None
    perf_test_cpu: dict | None
    bare_cpu: dict | None

    @property
    def ratio(self) -> float:
        return self.pipeline_per_s / self.perf_test_per_s if self.perf_test_per_s else 0.0


def _pipeline(ws: Workspace, events: int) -> tuple[float, dict | None]:
    from flows.produce import produce_orders
    from orderstream.runtime import settings_in_environment

    with ws.meter() as meter, settings_in_environment(ws.settings):
        started = time.perf_counter()
        report = produce_orders()
        elapsed = time.perf_counter() - started
    check_count("P1 pipeline", events, report.counts.produced_inventory)
    return events / elapsed, meter.split.as_dict() if meter.split else None


# The pipeline producer's settings that the Java producer has too (librdkafka's own queue
# limits have no Java equivalent).
SAME_CONFIG_KEYS = ("linger.ms", "batch.size", "compression.type")


def _perf_test(ws: Workspace, events: int, record_size: int, same_config: bool = False) -> tuple[float, dict | None]:
    topic = ws.topic("perf-same" if same_config else "perf")
    extra = None
    if same_config:
        config = producer_config(ws.settings)
        extra = {key: str(config[key]) for key in SAME_CONFIG_KEYS}
    with ws.meter() as meter:
        result = producer_perf(ws.settings, ws.env.bootstrap, topic, events, record_size, extra_props=extra)
    check_count("P1 ProducerPerformance", events, result.records)
    return result.per_s, meter.split.as_dict() if meter.split else None


def _bare(ws: Workspace, messages) -> tuple[float, dict | None]:
    topic = ws.topic("bare")
    producer = BareProducer(ws.settings)
    with ws.meter() as meter:
        started = time.perf_counter()
        producer.send(topic, messages)
        producer.flush()
        elapsed = time.perf_counter() - started
    check_count("P1 bare producer", len(messages), producer.acked)
    return len(messages) / elapsed, meter.split.as_dict() if meter.split else None


def run_once(env: BenchEnv, events: int, rotation: int = 0) -> P1Run:
    with env.workspace("p1") as ws:
        copy_events(ws.engine, inventory_frames(events))
        messages = source_messages(ws.engine)
        check_count("P1 source rows", events, len(messages))
        record_size = round(messages.avg_value_bytes)
        steps = {
            "pipeline": lambda: _pipeline(ws, events),
            "perf_test": lambda: _perf_test(ws, events, record_size),
            "bare": lambda: _bare(ws, messages),
        }
        order = list(steps)
        order = order[rotation % 3 :] + order[: rotation % 3]
        results = {name: steps[name]() for name in order}
        results["perf_test_same_config"] = _perf_test(ws, events, record_size, same_config=True)
    run = P1Run(
        events=events,
        pipeline_per_s=results["pipeline"][0],
        perf_test_per_s=results["perf_test"][0],
        perf_test_same_config_per_s=results["perf_test_same_config"][0],
        bare_python_per_s=results["bare"][0],
        avg_value_bytes=messages.avg_value_bytes,
        avg_key_bytes=messages.avg_key_bytes,
        avg_header_bytes=messages.avg_header_bytes,
        pipeline_cpu=results["pipeline"][1],
        perf_test_cpu=results["perf_test"][1],
        bare_cpu=results["bare"][1],
    )
    log.info(
        "P1 run (%s first): pipeline %.0f/s, perf test %.0f/s, bare %.0f/s, ratio %.2f",
        order[0], run.pipeline_per_s, run.perf_test_per_s, run.bare_python_per_s, run.ratio,
    )
    return run


def measure(env: BenchEnv, events: int, repeats: int) -> dict:
    warm_up(env)
    runs = [run_once(env, events, rotation=i) for i in range(repeats)]
    ratio = median(r.ratio for r in runs)
    return {
        "pipeline_per_s": rounded(median(r.pipeline_per_s for r in runs), 0),
        "perf_test_per_s": rounded(median(r.perf_test_per_s for r in runs), 0),
        "bare_python_per_s": rounded(median(r.bare_python_per_s for r in runs), 0),
        "ratio": rounded(ratio, 3),
        "perf_test_same_config_per_s": rounded(median(r.perf_test_same_config_per_s for r in runs), 0),
        "goal": f"ratio >= {GOAL_RATIO}",
        "goal_met": ratio is not None and ratio >= GOAL_RATIO,
        "events": events,
        "event_kind": "inventory share of the seed data",
        "record_size_bytes": round(median(r.avg_value_bytes for r in runs) or 0),
        "avg_key_bytes": rounded(median(r.avg_key_bytes for r in runs)),
        "avg_header_bytes": rounded(median(r.avg_header_bytes for r in runs)),
        "repeats": len(runs),
        "runs": [{**asdict(r), "ratio": round(r.ratio, 3)} for r in runs],
    }

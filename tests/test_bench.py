"""The bench harness: every measurement once in its smallest configuration on the session's
broker and PostgreSQL, plus the parsers of Kafka's perf tools and the report.

No timed assertions: only that each measurement ran, has the documented shape, and processed
exactly the events it was asked to (a mismatch raises CountMismatch inside the measurement).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from orderstream.bench import SMALLEST, p1_producer, p2_consumer, p3_latency, p4_memory, p5_prefect
from orderstream.bench.env import BenchEnv
from orderstream.bench.kafka_tools import parse_consumer_perf, parse_end_to_end, parse_producer_perf
from orderstream.bench.report import markdown_table, to_json, write_results
from orderstream.settings import Settings

PRODUCER_PERF_OUTPUT = (
    "Option --producer-props has been deprecated and will be removed in a future version. Use --command-property instead.\n"
    "100000 records sent, 20894.274969 records/sec (5.18 MB/sec), 916.48 ms avg latency, 1340.00 ms max latency, "
    "1089 ms 50th, 1254 ms 95th, 1301 ms 99th, 1328 ms 99.9th.\n"
)
CONSUMER_PERF_OUTPUT = (
    "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, "
    "fetch.MB.sec, fetch.nMsg.sec\n"
    "2026-11-25 21:23:16:713, 2026-11-25 21:23:20:336, 24.7955, 6.8439, 100000, 27601.4353, 2596, 1027, 24.1437, 97370.9834\n"
)
END_TO_END_OUTPUT = """\
0\t99.59921700000001
1000\t1.612109
Avg latency: 5.4289 ms
Percentiles: 50th = 2, 99th = 42, 99.9th = 123
"""


@pytest.fixture
def env(settings: Settings) -> Iterator[BenchEnv]:
    """A bench environment on the session's broker and this test's PostgreSQL database."""
    yield BenchEnv(settings)


postgres_only = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.mark.unit
def test_producer_perf_summary_line_is_parsed():
    result = parse_producer_perf(PRODUCER_PERF_OUTPUT)
    assert (result.records, result.per_s, result.mb_per_s, result.p99_latency_ms) == (100_000, 20894.274969, 5.18, 1301.0)


@pytest.mark.unit
def test_consumer_perf_csv_line_is_parsed():
    result = parse_consumer_perf(CONSUMER_PERF_OUTPUT)
    assert (result.records, result.per_s, result.fetch_per_s, result.rebalance_ms) == (100_000, 27601.4353, 97370.9834, 2596.0)


@pytest.mark.unit
def test_end_to_end_latency_summary_is_parsed():
    result = parse_end_to_end(END_TO_END_OUTPUT, records=2000)
    assert (result.avg_ms, result.p50_ms, result.p99_ms, result.p999_ms) == (5.4289, 2.0, 42.0, 123.0)


@pytest.mark.unit
def test_results_markdown_and_plot_are_written(tmp_path):
    result = {
        "P1": {"pipeline_per_s": 9000.0, "perf_test_per_s": 30000.0, "bare_python_per_s": 60000.0, "ratio": 0.3,
               "goal_met": False, "events": 1000, "record_size_bytes": 321, "runs": []},
        "P2": {"apply_per_s": 12000.0, "consumer_perf_test_per_s": 90000.0, "pg_raw_per_s": 70000.0, "ratio": 0.13,
               "pg_raw_ratio": 0.17, "goal_met": False, "events": 1000, "runs": []},
        "P5": {"prefect_overhead_share": 0.08, "prefect_only_share": 0.07, "wall_s": 12.0, "task_bodies_s": 11.0,
               "goal_met": False, "events": 1000},
        "cores": 2, "kafka_version": "4.3.1", "quick": True, "repeats": 3, "date": "2026-11-25T00:00:00+00:00",
        "machine": {"cores": 2}, "duration_s": 60.0, "errors": ["P3: CountMismatch: example"],
    }
    path = write_results(result, tmp_path)
    text = path.read_text()
    assert "| P1 producer pipeline (1,000 events, 321 B) | 9,000/s |" in text
    assert "P3: CountMismatch: example" in text
    assert "| 0.17 | ratio to PG COPY >= 0.8 | NO |" in text
    assert (tmp_path / "p1_p2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert markdown_table(result).count("\n") == 4  # header, rule, P1, P2, P5
    assert json.loads(to_json(result))["P1"]["ratio"] == 0.3


@pytest.mark.integration
@postgres_only
def test_p1_producer_pipeline_and_baselines_send_every_event(env):
    events = SMALLEST.p1_events
    result = p1_producer.measure(env, events, repeats=1)
    assert {"pipeline_per_s", "perf_test_per_s", "bare_python_per_s", "ratio"} <= result.keys()
    assert result["events"] == events and result["repeats"] == 1
    assert [run["events"] for run in result["runs"]] == [events]
    assert result["record_size_bytes"] > 100  # a JSON order event, measured from the payloads
    assert all(result[k] > 0 for k in ("pipeline_per_s", "perf_test_per_s", "bare_python_per_s"))


@pytest.mark.integration
@postgres_only
def test_p2_consumer_applies_every_event_and_baselines_read_them(env):
    events = SMALLEST.p2_events
    result = p2_consumer.measure(env, events, repeats=1)
    assert {"apply_per_s", "consumer_perf_test_per_s", "pg_raw_per_s", "ratio", "pg_raw_ratio"} <= result.keys()
    assert result["pg_raw_ratio"] == pytest.approx(result["apply_per_s"] / result["pg_raw_per_s"], abs=0.001)  # 3 decimals
    assert result["events"] == events
    assert result["runs"][0]["batches"] >= 1
    assert all(result[k] > 0 for k in ("apply_per_s", "consumer_perf_test_per_s", "pg_raw_per_s"))


@pytest.mark.integration
@postgres_only
def test_p3_latency_covers_every_written_event(env):
    result = p3_latency.measure(env, rate=100, duration_s=2, floor_records=100, repeats=1)
    run = result["runs"][0]
    assert run["events"] == 200
    assert run["exit_codes"] == {"consume-inventory": 0, "consume-delivery": 0, "produce": 0}
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["floor_p50_ms"] <= result["floor_p99_ms"]


@pytest.mark.integration
@postgres_only
def test_p4_memory_of_produce_and_consume_subprocesses(env):
    result = p4_memory.measure(env, small=SMALLEST.p4_small_events, large=SMALLEST.p4_large_events, repeats=1, scaled_down=True)
    assert [run["events"] for run in result["runs"]] == [SMALLEST.p4_large_events, SMALLEST.p4_small_events]
    for role in ("producer", "consumer"):
        assert result[role]["small_mb"] > 20 and result[role]["large_mb"] > 20
        assert result[role]["ratio"] == pytest.approx(result[role]["large_mb"] / result[role]["small_mb"], rel=0.01)
    assert result["scaled_down"] is True


@pytest.mark.integration
@postgres_only
def test_p5_splits_the_flow_run_wall_time(env):
    events = SMALLEST.p5_events
    result = p5_prefect.measure(env, events, repeats=1)
    run = result["runs"][0]
    assert run["events"] == events
    assert run["task_runs"] == 3  # extract, send_batch, finish_batch: a read shorter than a chunk ends the pass
    parts = sum(result[k] for k in ("flow_orchestration_s", "flow_body_own_s", "task_orchestration_s", "task_bodies_s"))
    assert parts == pytest.approx(result["wall_s"], abs=0.01)
    assert 0 < result["prefect_overhead_share"] < 1

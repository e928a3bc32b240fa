"""The P3 report: both rates, the split at the acknowledgement, the floor, and a latency histogram plot."""

from __future__ import annotations

import numpy as np
import pytest

from orderstream.bench import p3_latency
from orderstream.bench.report import LATENCY_PLOT_NAME, markdown_table, write_results

pytestmark = pytest.mark.unit


def section(rate: float, latencies_ms: list[float]) -> dict:
    values = np.array(latencies_ms)
    return {
        "rate_per_s": rate, "duration_s": 60.0, "p50_ms": float(np.median(values)), "p95_ms": 90.0, "p99_ms": 120.0,
        "producer_p50_ms": 30.0, "producer_p99_ms": 70.0, "consumer_p50_ms": 20.0, "consumer_p99_ms": 50.0,
        "floor_p50_ms": 1.0, "floor_p99_ms": 9.0, "floor_p999_ms": 28.0, "goal_met": True,
        "histogram_edges_ms": list(p3_latency.HISTOGRAM_EDGES_MS), "histogram": p3_latency._histogram(values),
    }


def test_the_histogram_counts_every_event_out_of_range_ones_in_the_end_bins() -> None:
    counts = p3_latency._histogram(np.array([0.2, 5.0, 80.0, 80.0, 120_000.0]))
    assert sum(counts) == 5 and counts[0] == 1 and counts[-1] == 1


def test_p3_rows_give_both_rates_the_split_and_the_floor_and_the_plot_is_written(tmp_path) -> None:
    result = {"cores": 2, "repeats": 1, "P3": {**section(1_000, [40, 50, 60]), "high_rate": section(5_000, [200, 300])}}
    table = markdown_table(result)
    assert "P3 latency, commit to applied (1,000/s for 60 s)" in table
    assert "P3 latency, commit to applied (5,000/s for 60 s)" in table
    assert "commit to acknowledged: p50 30 / p99 70; acknowledged to applied: p50 20 / p99 50" in table
    assert "EndToEndLatency p50 1 / p99 9 / p99.9 28 ms" in table
    text = write_results(result, tmp_path).read_text()
    assert f"![P3 latency histogram]({LATENCY_PLOT_NAME})" in text
    assert (tmp_path / LATENCY_PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

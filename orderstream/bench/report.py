"""Presenting a bench result: one JSON object, a rich table, bench/RESULTS.md with a PNG plot."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

PLOT_NAME = "p1_p2.png"
LATENCY_PLOT_NAME = "p3_latency.png"


def machine_facts(postgres_version: str | None = None) -> dict[str, Any]:
    import confluent_kafka

    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gb": _memory_gb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "java": _java_version(),
    }
    if postgres_version:
        facts["postgresql"] = postgres_version
    if hasattr(os, "getloadavg"):
        facts["load_average_1_5_15"] = [round(v, 1) for v in os.getloadavg()]
    return facts


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _java_version() -> str | None:
    import shutil
    import subprocess

    java = shutil.which("java")
    if java is None:
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True)
    first = (out.stderr or out.stdout).strip().splitlines()
    return first[0] if first else None


def to_json(result: dict) -> str:
    return json.dumps(result, default=str)


# --- the table ---------------------------------------------------------------------------------


def _n(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 10:
        return f"{value:.3g}{unit}"
    return f"{value:,.0f}{unit}"


def rows(result: dict) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, measured, baseline, ratio, goal, met) per line of the table."""
    out: list[tuple[str, str, str, str, str, str]] = []

    def met(section: dict) -> str:
        return "yes" if section.get("goal_met") else "NO"

    def failed(key: str, title: str) -> bool:
        section = result.get(key)
        if section is None:
            return True
        if "error" in section:
            out.append((title, "error", section["error"][:80], "", "", "NO"))
            return True
        return False

    if not failed("P1", "P1 producer pipeline"):
        p = result["P1"]
        out.append((
            f"P1 producer pipeline ({p['events']:,} events, {p['record_size_bytes']} B)",
            f"{_n(p['pipeline_per_s'])}/s",
            f"perf test {_n(p['perf_test_per_s'])}/s (with the pipeline's batching and lz4: "
            f"{_n(p.get('perf_test_same_config_per_s'))}/s); bare Python {_n(p['bare_python_per_s'])}/s",
            f"{p['ratio']:.2f}", "ratio >= 0.5", met(p),
        ))
    if not failed("P2", "P2 consumer apply"):
        p = result["P2"]
        out.append((
            f"P2 consumer apply ({p['events']:,} events)",
            f"{_n(p['apply_per_s'])}/s",
            f"PG COPY of the same rows {_n(p['pg_raw_per_s'])}/s; consumer perf test {_n(p['consumer_perf_test_per_s'])}/s "
            f"({p['ratio']:.2f} of it)",
            f"{p.get('pg_raw_ratio') or 0:.2f}", "ratio to PG COPY >= 0.8", met(p),
        ))
    if not failed("P3", "P3 end-to-end latency"):
        p = result["P3"]
        for section, goal in ((p, "p99 <= 250 ms and p50 <= 100 ms"), (p.get("high_rate"), "p99 <= 1,000 ms")):
            if not section:
                continue
            out.append((
                f"P3 latency, commit to applied ({section['rate_per_s']:,.0f}/s for {section['duration_s']:.0f} s"
                + (f", after {section['warmup_s']:.0f} s of warm-up" if section.get("warmup_s") else "") + ")",
                f"p50 {_n(section['p50_ms'])} / p95 {_n(section['p95_ms'])} / p99 {_n(section['p99_ms'])} ms "
                f"(commit to acknowledged: p50 {_n(section.get('producer_p50_ms'))} / p99 {_n(section.get('producer_p99_ms'))}; "
                f"acknowledged to applied: p50 {_n(section.get('consumer_p50_ms'))} / p99 {_n(section.get('consumer_p99_ms'))})",
                f"EndToEndLatency p50 {_n(section['floor_p50_ms'])} / p99 {_n(section['floor_p99_ms'])} / "
                f"p99.9 {_n(section['floor_p999_ms'])} ms",
                "", goal, met(section),
            ))
    if not failed("P4", "P4 memory"):
        p = result["P4"]
        for role in ("producer", "consumer"):
            r = p[role]
            gx_check = f"; its GX check process {_n(r['gx_check_large_mb'])} MB" if r.get("gx_check_large_mb") else ""
            out.append((
                f"P4 {role} peak RSS ({p['note']})",
                f"{_n(r['large_mb'])} MB",
                f"{_n(r['small_mb'])} MB at {p['small_events']:,}{gx_check}",
                f"{r['ratio']:.2f}" if r["ratio"] is not None else "-", "ratio <= 1.2 and <= 400 MB", met(p),
            ))
    if not failed("P5", "P5 Prefect overhead"):
        p = result["P5"]
        out.append((
            f"P5 Prefect overhead ({p['events']:,}-event batch run)",
            f"{p['prefect_overhead_share'] * 100:.1f}% of {p['wall_s']:.1f} s",
            f"Prefect alone {p['prefect_only_share'] * 100:.1f}%; task bodies {p['task_bodies_s']:.1f} s",
            "", "<= 5%", met(p),
        ))
    return out


HEADERS = ("Figure", "Measured (median)", "Baseline, same run", "Ratio", "Goal", "Met")


def table(result: dict) -> Table:
    t = Table(title=f"orderstream bench: {result.get('cores')} cores, Kafka {result.get('kafka_version')}"
              f"{', --quick' if result.get('quick') else ''}, median of {result.get('repeats')}")
    for header in HEADERS:
        t.add_column(header, overflow="fold")
    for row in rows(result):
        t.add_row(*row)
    return t


def print_table(result: dict, console: Console | None = None) -> None:
    (console or Console()).print(table(result))


def markdown_table(result: dict) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows(result):
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    return "\n".join(lines)


# --- RESULTS.md and the plot -------------------------------------------------------------------


def plot(result: dict, path: Path) -> Path | None:
    """Bars of P1 and P2 against their perf-test baselines (events/s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []  # (title, bars, goal line, goal label)
    if "P1" in result and "error" not in result["P1"]:
        p = result["P1"]
        bars = [
            ("pipeline", p["pipeline_per_s"]),
            ("bare Python", p["bare_python_per_s"]),
            ("producer perf test", p["perf_test_per_s"]),
        ]
        if p.get("perf_test_same_config_per_s"):
            bars.append(("perf test,\npipeline's config", p["perf_test_same_config_per_s"]))
        panels.append(("P1 produce", bars, 0.5 * (p["perf_test_per_s"] or 0), "goal: 0.5 x perf test"))
    if "P2" in result and "error" not in result["P2"]:
        p = result["P2"]
        bars = [
            ("apply", p["apply_per_s"]),
            ("PG COPY", p["pg_raw_per_s"]),
            ("consumer perf test", p["consumer_perf_test_per_s"]),
        ]
        goal = max(50_000, 0.25 * (p["consumer_perf_test_per_s"] or 0))
        panels.append(("P2 consume + apply", bars, goal, "goal: 50,000/s and 0.25 x perf test"))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    colours = ["#d1495b", "#edae49", "#00798c", "#30638e"]
    for ax, (title, bars, goal, goal_label) in zip(axes[0], panels):
        labels = [b[0] for b in bars]
        values = [b[1] or 0 for b in bars]
        drawn = ax.bar(labels, values, color=colours[: len(bars)])
        ax.bar_label(drawn, labels=[f"{v:,.0f}" for v in values], fontsize=8)
        ax.axhline(goal, color="black", linestyle="--", linewidth=1)
        ax.annotate(goal_label, (0.01, goal), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
        ax.set_title(title)
        ax.set_ylabel("events/s (median)")
        ax.tick_params(axis="x", labelsize=8)
        ax.margins(y=0.15)
    fig.suptitle(f"orderstream vs Kafka's perf tools, {result.get('cores')} cores", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_plot(result: dict, path: Path) -> Path | None:
    """P3's histogram of source-commit-to-applied latencies, one line per rate, goals marked."""
    p3 = result.get("P3") or {}
    sections = [s for s in (p3, p3.get("high_rate")) if s and s.get("histogram")]
    if "error" in p3 or not sections:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for section, colour in zip(sections, ("#00798c", "#d1495b")):
        edges, counts = section["histogram_edges_ms"], section["histogram"]
        share = [c / (sum(counts) or 1) for c in counts]
        ax.stairs(share, edges, color=colour, linewidth=1.5,
                  label=f"{section['rate_per_s']:,.0f}/s: p50 {_n(section['p50_ms'])}, p99 {_n(section['p99_ms'])} ms")
        ax.axvline(section["floor_p99_ms"] or 1, color=colour, linestyle=":", linewidth=1)
    for goal, label in ((100, "p50 goal"), (250, "p99 goal at 1,000/s"), (1_000, "p99 goal at 5,000/s")):
        ax.axvline(goal, color="black", linestyle="--", linewidth=0.8)
        ax.annotate(label, (goal, 0.98), xycoords=("data", "axes fraction"), fontsize=7, rotation=90, va="top", ha="right")
    ax.set_xscale("log")
    ax.set_xlabel("source commit to applied, ms (dotted: EndToEndLatency p99 of the same run)")
    ax.set_ylabel("share of events")
    ax.set_title(f"P3 latency, {result.get('cores')} cores", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _per_wall_second(split: dict, key: str) -> str:
    """CPU seconds of one share per wall second of its run, or "-" when the run did not measure it."""
    return "-" if split.get(key) is None else f"{split[key] / (split['wall_s'] or 1):.2f}"


def cpu_lines(result: dict) -> list[str]:
    """The CPU split of each P1/P2 contender, medians of the repeats' CPU seconds per wall second."""
    out = []
    contenders = (("P1", ("pipeline_cpu", "perf_test_cpu", "bare_cpu")), ("P2", ("apply_cpu", "perf_test_cpu", "pg_raw_cpu")))
    for key, fields in contenders:
        runs = (result.get(key) or {}).get("runs") or []
        for name in fields:
            splits = sorted((r.get(name) for r in runs if r.get(name)), key=lambda split: split["wall_s"])
            if not splits:
                continue
            s = splits[len(splits) // 2]  # the repeat with the median wall time
            shares = " | ".join(_per_wall_second(s, k) for k in ("python_s", "children_s", "broker_s", "postgres_s", "other_s"))
            out.append(f"| {key} {name.removesuffix('_cpu')} | {s['wall_s']:.1f} | {shares} |")
    if not out:
        return []
    return [
        "| run | wall s | Python | Java tool / subprocess | broker JVM | PostgreSQL | other |",
        "|---|---|---|---|---|---|---|",
        *out,
    ]


def write_results(result: dict, out_dir: Path = Path("bench")) -> Path:
    """Write `out_dir/RESULTS.md` (table, date, machine), the P1/P2 plot and the whole result
    as `results.json` next to it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    image = plot(result, out_dir / PLOT_NAME)
    machine = result.get("machine") or {}
    lines = [
        "# orderstream bench results",
        "",
        f"Run on {result.get('date', '?')} with `orderstream bench{' --quick' if result.get('quick') else ''}` "
        f"(median of {result.get('repeats')} repeats per figure; {result.get('duration_s', 0) / 60:.0f} min in all).",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items() if v is not None) + ".",
        "",
        markdown_table(result),
        "",
    ]
    if image is not None:
        lines += [f"![P1 and P2 against Kafka's perf tools]({image.name})", ""]
    latency = latency_plot(result, out_dir / LATENCY_PLOT_NAME)
    if latency is not None:
        lines += [f"![P3 latency histogram]({latency.name})", ""]
    cpu = cpu_lines(result)
    if cpu:
        lines += [
            "CPU split of each contender (CPU seconds per wall second, from /proc; the repeat with the median "
            "wall time; `other` is everything else on the machine: other users, the kernel):",
            "",
            *cpu,
            "",
        ]
    if result.get("errors"):
        lines += ["Errors:", "", *[f"- {e}" for e in result["errors"]], ""]
    lines += ["How each figure is measured: see the docstrings of `orderstream/bench/p*_*.py`.", ""]
    path = out_dir / "RESULTS.md"
    path.write_text("\n".join(lines))
    (out_dir / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return path

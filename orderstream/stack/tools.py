"""Kafka's own command-line tools (e.g. the perf tools), run on the broker's classpath."""

from __future__ import annotations

import subprocess

from orderstream.settings import Settings
from orderstream.stack.jars import classpath, java_executable
from orderstream.stack.layout import tools_log_config


def run_kafka_tool(
    settings: Settings, main_class: str, args: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a Kafka tool (e.g. org.apache.kafka.tools.ProducerPerformance) on the broker's classpath."""
    java = java_executable()
    return subprocess.run(
        [java, f"-Xmx{settings.kafka_heap}", f"-Dlog4j2.configurationFile={tools_log_config(settings)}",
         "-cp", classpath(), main_class, *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )

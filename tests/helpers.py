"""Test helpers: wait for a condition with a deadline instead of sleeping and hoping; the
environment of an `orderstream` subprocess; reading a process's /metrics."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from orderstream import processes
from orderstream.settings import Settings

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, message: str, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy and return that; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s: {message} (last value: {value!r})")
        time.sleep(interval)


def orderstream_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment of an `orderstream` subprocess working with the test's `settings`.

    `Settings.subprocess_env`: this process's environment without any setting's variable,
    then the settings, so the child sees exactly these (a None setting stays unset there).
    Flows in the child report to the session's Prefect API instead of starting their own.
    """
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    return settings.subprocess_env(**({"PREFECT_API_URL": api_url} if api_url else {}), **extra)


def free_port(span: int = 1) -> int:
    """A port nobody listens on right now, and with `span`, the `span - 1` after it free too
    (replicas serve metrics on port + i)."""
    while True:
        port = processes.free_port()
        if all(processes.port_is_free(processes.LOCALHOST, p) for p in range(port + 1, port + span)):
            return port


def scrape(port: int) -> str:
    """The Prometheus text at 127.0.0.1:port/metrics, or "" while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` with these labels in Prometheus text."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
        if not wanted and line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def spawned_children(pid: int) -> list[int]:
    """Processes whose parent is `pid` and that run a multiprocessing spawn (not its resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            found.append(int(stat.parent.name))
    return found


def stop_tree(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Cleanup for a failed test: SIGTERM an `orderstream` process, then SIGKILL it and its replicas."""
    if proc.poll() is not None:
        return
    children = spawned_children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    for pid in [*spawned_children(proc.pid), *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.wait(10)

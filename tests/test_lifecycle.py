"""The one stop signal of a process: SIGTERM/SIGINT, outside events, forwarding to replicas."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from orderstream.lifecycle import StopSignal

pytestmark = pytest.mark.unit

# A loop like the producer's and the consumers': it watches the process's stop request.
LOOP = textwrap.dedent(
    """
    import sys, time
    from orderstream.lifecycle import install_signal_handlers, stop_requested
    install_signal_handlers()
    print("ready", flush=True)
    batches = 0
    while not stop_requested.is_set():
        time.sleep(0.05)  # a batch in hand
        batches += 1
    print("finishing", flush=True)
    if "--slow-exit" in sys.argv:
        time.sleep(30)  # a batch that takes long to finish: a second signal interrupts it
    print(f"stopped after {batches} batches", flush=True)
    """
)


def start_loop(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", LOOP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_finishes_the_batch_in_hand_and_exits_0(sig):
    proc = start_loop()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1].startswith("stopped after ")


def test_a_second_signal_interrupts_at_once():
    proc = start_loop("--slow-exit")
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "finishing"  # the first one was handled
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err


def test_a_loop_stops_on_its_outside_event_or_the_process_request():
    process_wide, outside = StopSignal(), threading.Event()
    stop = StopSignal(process_wide, outside)
    assert not stop.is_set() and stop.wait(0.05) is False
    outside.set()
    assert stop.is_set() and stop.wait(0) is True
    other = StopSignal(process_wide, threading.Event())
    threading.Timer(0.1, process_wide.set).start()
    assert other.wait(5) is True


def test_the_request_is_forwarded_to_replica_events_until_undone():
    ctx = multiprocessing.get_context("spawn")
    request, replicas, later, undone = StopSignal(), ctx.Event(), ctx.Event(), ctx.Event()
    request.forward(replicas)
    undo = request.forward(undone)
    undo()
    request.set()
    assert replicas.is_set() and not undone.is_set()
    request.forward(later)  # forwarding an already set request sets the target at once
    assert later.is_set()

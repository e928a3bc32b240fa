"""Graceful shutdown: one stop signal per process, set by SIGTERM/SIGINT, watched by every loop.

The producer flow, each consumer and the consumer-replica supervisor all stop the same way:
the first SIGTERM or SIGINT sets `stop_requested`; the loop finishes the batch in hand,
commits, closes its clients and returns (the process exits 0). Once a stop is requested, a
further signal interrupts at once (`KeyboardInterrupt`).

A loop that can also be stopped from outside (a test's thread event, the replica
supervisor's multiprocessing event) watches `StopSignal(stop_requested, outside)`. The
supervisor hands the request on to its replica processes with `stop_requested.forward(event)`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

POLL_S = 0.1


class Flag(Protocol):
    def is_set(self) -> bool: ...


class Settable(Protocol):
    def set(self) -> None: ...


class StopSignal:
    """A request to finish the batch in hand and stop: `set()` here, or any of `outside` set."""

    def __init__(self, *outside: Flag | None) -> None:
        self._local = threading.Event()
        self._outside = tuple(flag for flag in outside if flag is not None)
        self._forward: list[Settable] = []
        self._lock = threading.RLock()  # the signal handler may run while the main thread holds it

    def set(self) -> None:
        self._local.set()
        with self._lock:
            targets = list(self._forward)
        for target in targets:
            target.set()

    def is_set(self) -> bool:
        return self._local.is_set() or any(flag.is_set() for flag in self._outside)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set or `timeout` passed; True iff set."""
        if not self._outside:
            return self._local.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            remaining = POLL_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._local.wait(min(POLL_S, remaining))
        return True

    def forward(self, target: Settable) -> Callable[[], None]:
        """Set `target` too when this is set (at once if it already is); returns the undo."""
        with self._lock:
            self._forward.append(target)
        if self._local.is_set():
            target.set()

        def undo() -> None:
            with self._lock:
                if target in self._forward:
                    self._forward.remove(target)

        return undo


# The process's stop request: set by SIGTERM/SIGINT once `install_signal_handlers` ran.
stop_requested = StopSignal()


def install_signal_handlers() -> Callable[[], None]:
    """Turn SIGTERM and SIGINT into `stop_requested`; a signal after that interrupts at once.

    Returns a function that restores the previous handlers. Outside the main thread (where
    Python cannot install handlers) it does nothing. Installing it again is harmless.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handle(signum: int, _frame) -> None:
        if stop_requested.is_set():
            raise KeyboardInterrupt
        log.info("%s: finishing the batch in hand, then stopping", signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore

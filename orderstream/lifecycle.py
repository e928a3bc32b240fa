"""Graceful shutdown shared by long-running loops: SIGTERM/SIGINT set one event."""

from __future__ import annotations

import signal
import threading

stop_requested = threading.Event()


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGINT into a request to finish the current batch and exit."""
    if threading.current_thread() is not threading.main_thread():
        return

    def _request_stop(signum, _frame) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)

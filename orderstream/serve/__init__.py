"""`orderstream serve`: the long-running system for one machine.

In order: the local Kafka (unless external) and the migrated database; a Prefect server with its UI,
its data in `$ORDERSTREAM_HOME/prefect`; the `orderstream` process work pool; the deployments of
`prefect.yaml` (`prefect deploy --all`); a worker; and flow runs of the continuous producer and both
consumers. While it runs, supervision (`supervision`) starts the worker and those roles again when
they die. Stopping (Ctrl-C, SIGTERM, or `ServeHandle.stop()`) goes the other way: stop supervising,
cancel the runs still going, stop the worker, stop the server, then the broker if this started it.

Every child runs in its own process group, so a Ctrl-C in the terminal reaches only this process,
which then stops the children in order instead of all of them dying at once.

`server` starts the Prefect server, `api` talks to it, `handle` runs the whole system,
`supervision` keeps it running; this module is the command.
"""

from __future__ import annotations

import signal
import threading
import webbrowser

from orderstream.processes import free_port
from orderstream.serve.api import WORK_POOL, prefect_client
from orderstream.serve.handle import LONG_RUNNING, ServeHandle
from orderstream.serve.server import PrefectServer, ServeInterrupted
from orderstream.settings import Settings

__all__ = [
    "LONG_RUNNING",
    "WORK_POOL",
    "PrefectServer",
    "ServeHandle",
    "ServeInterrupted",
    "free_port",  # tests/test_browser.py imports it from here
    "prefect_client",
    "serve",
]


def serve(settings: Settings, *, port: int = 4200, open_browser: bool = False, host: str = "127.0.0.1") -> None:
    """Run the whole system until Ctrl-C or SIGTERM, then stop it cleanly. Raises UserError on failure."""
    from orderstream.console import console

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def say(message: str) -> None:
        console.print(f"[dim]serve:[/] {message}", highlight=False, soft_wrap=True)

    try:
        handle = ServeHandle.start(settings, port=port, host=host, stop=stop, say=say)
        try:
            console.print(f"\nPrefect UI: [bold]{handle.ui_url}[/]", highlight=False, soft_wrap=True)
            for name, run_id in handle.flow_runs.items():
                console.print(f"  {name}: {handle.flow_run_url(run_id)}", highlight=False, soft_wrap=True)
            console.print("Ctrl-C stops everything.\n")
            if open_browser:
                webbrowser.open(handle.ui_url)
            while not stop.wait(1.0):
                handle.check()
            say("stopping")
        finally:
            handle.stop(say=say)
    except ServeInterrupted:
        say("stopped before everything had started")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

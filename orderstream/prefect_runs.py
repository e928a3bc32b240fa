"""How this process's flow runs talk to Prefect.

Prefect keeps its state in the home. Without `PREFECT_API_URL` each command runs its flows
against a temporary API server that lives only as long as the process; the flow-run
heartbeat exists so that a lasting server can mark a crashed run, which such a server cannot
do, and ending its thread costs most of a second per flow run. So `local_flow_runs()` turns
heartbeats off for the temporary server and leaves them alone for a real one (`serve`,
workers, `PREFECT_API_URL`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def prepare_prefect(home: Path) -> None:
    """Keep Prefect's state in the home and its temporary server quiet (set before import)."""
    prefect_home = Path(os.environ.setdefault("PREFECT_HOME", str(home / "prefect")))
    prefect_home.mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    # The temporary API server can take a while to come up on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@contextmanager
def local_flow_runs() -> Iterator[None]:
    """Run flows in this block without heartbeats when they go to the temporary server."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield

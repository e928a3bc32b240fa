"""The Prefect server of `orderstream serve`: its environment, starting it (API and UI) and stopping it."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from orderstream.errors import UserError
from orderstream.processes import STOP_TIMEOUT_S, Child, port_is_free, wait_until
from orderstream.settings import Settings

SERVER_START_TIMEOUT_S = 120.0  # a cold first start migrates the database and copies the UI
FLOW_RUN_HEARTBEAT_S = 30


class ServeInterrupted(UserError):
    """A stop was requested while the system was still starting."""


def check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise ServeInterrupted("stopped while starting")


def prefect_env(settings: Settings, api_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of the Prefect children: this process's, the settings, and Prefect's own home."""
    env = settings.subprocess_env(base)  # a None setting must not come back from this process's environment
    env.update(
        PREFECT_HOME=str(settings.home / "prefect"),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        PYTHONUNBUFFERED="1",
        # Flow runs started by the worker inherit this: a heartbeat every 30 s (Prefect's minimum),
        # which the zombie automation of automations.yaml watches.
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(FLOW_RUN_HEARTBEAT_S),
    )
    env.pop("PREFECT_PROFILE", None)
    env.pop("PREFECT_API_KEY", None)
    return env


@dataclass
class PrefectServer:
    """`prefect server start` (API and UI) on host:port with its data in `home`."""

    child: Child
    host: str
    port: int
    home: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @classmethod
    def start(
        cls,
        home: Path,
        *,
        port: int,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        timeout_s: float = SERVER_START_TIMEOUT_S,
        stop: threading.Event | None = None,
    ) -> PrefectServer:
        """Start the server and return once `/api/health` answers; raise UserError at the deadline."""
        if not port_is_free(host, port):
            raise UserError(f"port {port} on {host} is in use (another Prefect server?): choose another with --port")
        home.mkdir(parents=True, exist_ok=True)
        server_env = dict(os.environ if env is None else env)
        server_env.update(
            PREFECT_HOME=str(home),
            PREFECT_API_URL=f"http://{host}:{port}/api",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",  # the CLI quiets in-process servers; this one has a log
        )
        child = Child.start(
            "prefect server",
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            env=server_env, cwd=home, log_path=home / "logs" / "server.log",
        )
        server = cls(child, host, port, home)
        try:
            server.wait_healthy(timeout_s, stop)
        except BaseException:
            child.stop()
            raise
        return server

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float, stop: threading.Event | None = None) -> None:
        started = time.monotonic()

        def ready() -> bool:
            if not self.child.alive():
                raise UserError(
                    f"the Prefect server exited with code {self.child.process.returncode} while starting; "
                    f"the end of {self.child.log_path}:\n{self.child.tail()}"
                )
            return self.healthy()

        if not wait_until(ready, timeout_s, interval=0.2, stop=stop):
            check_stop(stop)
            raise UserError(
                f"the Prefect server did not answer {self.api_url}/health within {timeout_s:.0f} s "
                f"(after {time.monotonic() - started:.0f} s); the end of {self.child.log_path}:\n{self.child.tail()}"
            )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.child.stop(timeout_s)

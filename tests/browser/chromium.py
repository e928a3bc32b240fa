"""Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol.

No browser download and no driver binary: the package's own `chromium`, started with a fresh
profile, and a few DevTools commands over one websocket (`websockets` is a dependency of Prefect).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--window-size=1440,1000",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # the port chosen is written to DevToolsActivePort in the profile
)
START_TIMEOUT_S = 60.0
APT_TIMEOUT_S = 900.0


def ensure_chromium() -> str:
    """The path of `chromium`, installing Debian's package first if missing; skips only without apt."""
    found = shutil.which("chromium")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("chromium is not installed and there is no apt-get to install Debian's `chromium` package")
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and this user is not root: run `apt-get install -y chromium` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-qq", "chromium"]  # with its recommends: fonts for legible screenshots
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    if done.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run([apt, "update", "-qq"], env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    found = shutil.which("chromium")
    if done.returncode != 0 or not found:
        pytest.fail(f"`apt-get install chromium` failed ({done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    return found


class Chromium:
    """One headless Chromium with a throwaway profile and one page, as a context manager."""

    def __init__(self, executable: str, *, timeout_s: float = START_TIMEOUT_S) -> None:
        self.executable = executable
        self.timeout_s = timeout_s
        self._profile = tempfile.TemporaryDirectory(prefix="orderstream-chromium-")
        self._process: subprocess.Popen | None = None
        self._socket: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._requests: Requests | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Chromium:
        profile = Path(self._profile.name)
        self._log = open(profile.parent / f"{profile.name}.log", "wb")  # closed in __exit__
        self._process = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            port = self._devtools_port(profile)
            page = self._page_target(port)
            self._socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=self.timeout_s)
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):  # the process group is killed below anyway
                self.send("Browser.close", timeout_s=5)
            self._socket.close()
            self._socket = None
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)  # renderer and zygote processes too
            self._process.wait(10)
            self._process = None
        self._log.close()
        self._profile.cleanup()

    def _devtools_port(self, profile: Path) -> int:
        marker = profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._process.returncode}: {self._log_tail()}")
            try:
                first_line = marker.read_text().splitlines()[0]
                return int(first_line)
            except (OSError, IndexError, ValueError):
                time.sleep(0.1)
        raise RuntimeError(f"chromium wrote no DevToolsActivePort within {self.timeout_s:.0f} s: {self._log_tail()}")

    def _page_target(self, port: int) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            except httpx.HTTPError:
                targets = []
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]
            time.sleep(0.1)
        raise RuntimeError(f"chromium on port {port} has no page target")

    def _log_tail(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    # --- DevTools ----------------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """One DevTools command and its result (events arriving meanwhile are skipped)."""
        assert self._socket is not None, "the browser is not started"
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"DevTools {method}: no answer within {timeout_s:.0f} s")
            reply = json.loads(self._socket.recv(timeout=remaining))
            if reply.get("id") != message_id:
                if self._requests is not None:
                    self._requests.note(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"DevTools {method}: {reply['error']}")
            return reply.get("result", {})

    def record_requests(self) -> Requests:
        """Every request of the next page opened, as DevTools reports it (Network domain).

        The page shown until now is left for about:blank first, so that none of its requests
        is counted. The record fills as events are read, that is while later commands wait for
        their answer: call `wait_for_load` before reading it.
        """
        self.open("about:blank")
        deadline = time.monotonic() + self.timeout_s
        while self.evaluate("location.href") != "about:blank":  # the previous document is gone
            if time.monotonic() > deadline:
                raise RuntimeError(f"the page did not leave for about:blank within {self.timeout_s:.0f} s")
            time.sleep(0.05)
        self._requests = Requests()
        self.send("Network.enable")
        return self._requests

    def set_offline(self, offline: bool) -> None:
        """Emulate a machine without network (file:// pages still load)."""
        self.send("Network.emulateNetworkConditions",
                  {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})

    def wait_for_load(self, timeout_s: float = 30.0) -> None:
        """Wait until the page, its subresources and its fonts have loaded."""
        done = "document.readyState === 'complete' && document.fonts.status === 'loaded'"
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(done):
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not finish loading within {timeout_s:.0f} s")
            time.sleep(0.1)

    def open(self, url: str) -> None:
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"could not open {url}: {result['errorText']}")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def text(self) -> str:
        """The rendered page's visible text (what a person reads, after scripts ran)."""
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def wait_for_text(self, *needles: str, timeout_s: float = 60.0) -> str:
        """Poll the rendered text until it holds every needle; return it, or fail with what it showed."""
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(needle in text for needle in needles):
                return text
            time.sleep(0.25)
        missing = [n for n in needles if n not in text]
        raise AssertionError(f"page never showed {missing} within {timeout_s:.0f} s; it showed:\n{text[:3000]}")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not just the viewport)."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


class Requests:
    """The URLs a page requested, and those whose loading failed with the browser's reason."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.failed: dict[str, str] = {}
        self._by_id: dict[str, str] = {}

    def note(self, event: dict[str, Any]) -> None:
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            self.urls.append(params["request"]["url"])
            self._by_id[params["requestId"]] = params["request"]["url"]
        elif event.get("method") == "Network.loadingFailed":
            self.failed[self._by_id.get(params["requestId"], params["requestId"])] = params.get("errorText", "")

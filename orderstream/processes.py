"""Processes and ports of this machine: child processes, pid and process-group liveness, free
ports, and waiting on a condition with a deadline.

Liveness is read from /proc where there is one; without it (macOS) signal 0 and `ps` stand in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

LOCALHOST = "127.0.0.1"
STOP_TIMEOUT_S = 20.0
TAIL_LINES = 20
PROC = Path("/proc")
DEAD_STATES = ("Z", "X")  # a zombie, or a process being reaped: nothing runs any more


# --- waiting --------------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T], timeout_s: float, *, interval: float = 0.25, stop: threading.Event | None = None
) -> T | None:
    """Poll until `predicate()` is truthy and return that; None at the deadline or once `stop` is set.

    The predicate is always asked at least once, and may raise to end the wait early.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if stop is not None and stop.is_set():
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --- ports ----------------------------------------------------------------------------------------


def free_port(host: str = LOCALHOST) -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOCALHOST, exclude: Collection[int | None] = ()) -> list[int]:
    """`count` different free ports, none of them in `exclude`."""
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:  # hold each socket open so no port is handed out twice
            sock = socket.socket()
            sock.bind((host, 0))
            if sock.getsockname()[1] in exclude:
                sock.close()
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not bind host:port now, or None if it could.

    The probe reuses the address, as servers do, so a socket in TIME_WAIT does not count as taken.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def port_is_free(host: str, port: int) -> bool:
    return bind_error(host, port) is None


def accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


# --- pids and process groups ----------------------------------------------------------------------


def cmdline(pid: int) -> list[str]:
    """The argv of a process ([] if it is gone or a zombie)."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        if (PROC / "self").exists():
            return []
    except OSError:
        return []
    # No procfs (macOS): ask ps.
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return ps.stdout.split()


def _stat_fields(stat: Path) -> list[str] | None:
    """The fields of a /proc/<pid>/stat after "pid (comm)": state ppid pgrp ..."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_running(pid: int) -> bool:
    """True while the process is alive and not a zombie (exited, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(PROC / str(pid) / "stat")
    if not fields:
        return not (PROC / "self").exists()  # with procfs, no stat file means it just exited
    return fields[0] not in DEAD_STATES


def group_running(pgid: int) -> bool:
    """True while a process of the group is alive and not a zombie (from /proc; else any member)."""
    if not (PROC / "self" / "stat").exists():
        return _group_alive(pgid)
    for stat in PROC.glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if fields is not None and int(fields[2]) == pgid and fields[0] not in DEAD_STATES:
            return True
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group; one that is gone, or not ours to signal, is left alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(pgid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM a process group and SIGKILL whatever of it still runs after `timeout_s`."""
    signal_group(pgid, signal.SIGTERM)
    if not wait_until(lambda: not group_running(pgid), timeout_s):
        signal_group(pgid, signal.SIGKILL)


# --- child processes ------------------------------------------------------------------------------


def log_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` lines of a log file ([] if it cannot be read)."""
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


@dataclass
class Child:
    """A child process in its own process group, its output in a log file.

    Its own group, so a Ctrl-C in the terminal reaches only the parent, which then stops its
    children in order; and the child is SIGTERMed should the parent die first (Linux).
    """

    name: str
    process: subprocess.Popen
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(cls, name: str, argv: list[str], *, env: Mapping[str, str], cwd: Path, log_path: Path) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed in stop(): the child writes to it until then
        try:
            process = subprocess.Popen(
                argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_terminate_with_parent(),
            )
        except BaseException:
            log.close()
            raise
        return cls(name, process, log_path, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(log_tail(self.log_path, lines))

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the process group, SIGKILL it after `timeout_s`; the exit code."""
        try:
            if self.alive():
                signal_group(self.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    signal_group(self.pid, signal.SIGKILL)
                    self.process.wait(10)
            # Whatever the leader left behind in its group goes too.
            signal_group(self.pid, signal.SIGKILL)
            return self.process.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


def _terminate_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook (Linux) that has the child SIGTERMed if its parent dies, even by SIGKILL.

    libc is looked up here, in the parent: between fork and exec the child only makes the call.
    """
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return hook

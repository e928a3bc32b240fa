"""A throwaway PostgreSQL cluster in a temp dir, for tests: trust auth, fsync off, one free port."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from orderstream.errors import UserError
from orderstream.processes import free_port, pid_running, wait_until

HOST = "127.0.0.1"
OWNER = "postgres"  # PostgreSQL refuses to run as root; as root we run it as this user
START_TIMEOUT_S = 60
LOG_TAIL_LINES = 15


@cache
def pg_bindir() -> Path:
    """Where initdb and pg_ctl live: on PATH, per pg_config, or in Debian's versioned dirs."""
    candidates: list[Path] = []
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise UserError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL (e.g. apt-get install postgresql-15)"
    )


class ThrowawayPostgres:
    """`with ThrowawayPostgres() as pg:` a fresh cluster at `pg.url`, deleted on exit.

    `kill()` crashes it and `start()` brings it back on the same port and data dir.
    """

    def __init__(self) -> None:
        self.port: int | None = None
        self._root: Path | None = None

    def __enter__(self) -> ThrowawayPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@{HOST}:{self._require_port()}/{database}"

    def start(self) -> None:
        if self._root is None:
            self._initdb()
        elif self._postmaster_pid() is not None:
            return
        root, port = self._require_root(), self._require_port()
        options = f"-p {port} -k {root / 'sock'} -c listen_addresses={HOST} -c fsync=off"  # throwaway data only
        result = self._run(
            "pg_ctl", "start", "-w", "-t", str(START_TIMEOUT_S), "-D", str(root / "data"),
            "-l", str(root / "postgres.log"), "-o", options,
        )
        if result.returncode != 0:
            raise UserError(f"PostgreSQL did not start on port {port}; last log lines:\n{self._log_tail()}")

    def stop(self) -> None:
        """Stop in immediate mode: no checkpoint, the data dir is thrown away or crash-recovered."""
        if self._root is None or self._postmaster_pid() is None:
            return
        result = self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self._root / "data"))
        if result.returncode != 0:
            raise UserError(f"PostgreSQL on port {self.port} did not stop: {result.stdout.strip()[-300:]}")

    def kill(self) -> None:
        """SIGKILL the server and its backends, as in a crash; start() recovers the data."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        # pg_ctl starts the postmaster in its own session: its process group holds every backend.
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_running(pid), 10, interval=0.05)
        # A zombie of it (where init does not reap) would pass PostgreSQL's own stale-lock checks.
        root = self._require_root()
        (root / "data" / "postmaster.pid").unlink(missing_ok=True)
        (root / "sock" / f".s.PGSQL.{self._require_port()}.lock").unlink(missing_ok=True)

    def close(self) -> None:
        self.stop()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def create_database(self, name: str) -> str:
        self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        self._execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _execute(self, statement: sql.Composed) -> None:
        port = self._require_port()
        with psycopg.connect(host=HOST, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(statement)

    def _initdb(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="orderstream-pg-"))
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(OWNER)
            except KeyError:
                raise UserError(
                    f"PostgreSQL refuses to run as root and there is no '{OWNER}' user: "
                    "create one, or run as another user"
                ) from None
            os.chown(root, owner.pw_uid, owner.pw_gid)
        self._root, self.port = root, free_port(HOST)
        (root / "sock").mkdir()
        if os.geteuid() == 0:
            os.chown(root / "sock", owner.pw_uid, owner.pw_gid)
        result = self._run(
            "initdb", "-D", str(root / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"
        )
        if result.returncode != 0:
            raise UserError(f"initdb failed: {result.stdout.strip()[-500:]}")

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(pg_bindir() / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", OWNER, "--", *command]
        return subprocess.run(
            command, cwd=self._root, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def _postmaster_pid(self) -> int | None:
        try:
            pid = int((self._require_root() / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_running(pid) else None

    def _log_tail(self) -> str:
        try:
            lines = (self._require_root() / "postgres.log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log output)"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _require_root(self) -> Path:
        if self._root is None:
            raise RuntimeError("ThrowawayPostgres is not started")
        return self._root

    def _require_port(self) -> int:
        if self.port is None:
            raise RuntimeError("ThrowawayPostgres is not started")
        return self.port

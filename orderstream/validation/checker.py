"""Where GX checks the evaluator's judgements: right away in this process, or in a background process.

`validate_events` judges every batch with the evaluator and hands GX the same rows as a
`CheckJob`. The producer hands them to `background_checker()`: one `orderstream.validation.gx_worker`
process per producer process, started on first use and reused by every pass (GX's start-up
costs seconds), which checks the batches that wait together in one GX run and keeps each one's
Data Docs. It runs beside the producer's thread, not in it: GX in a thread of the producer would
take the interpreter lock from the hot path, and one process can use one core for Python.

* The check is bounded: a submit waits while the worker is `max_rows_behind` rows behind.
* GX runs at most every `gather_s` seconds, on every batch that arrived meanwhile (its ~200 ms
  fixed cost would otherwise keep a core busy at a steady trickle of small batches).
* `drain()` waits until every submitted batch is checked, asking the worker to check at once
  (a produce pass ends with it, so its Data Docs are complete when the command returns).
* A worker that dies is restarted and given every unchecked batch again (`MAX_RESTARTS` times
  per process); after that `CheckerFailed` stops the producer rather than let batches go unchecked.
* A hard kill of the producer takes the worker with it (it reads EOF on its input): batches not
  yet checked then have no Data Docs; their rows were judged by the evaluator all the same.

Every report is recorded: `orderstream_validation_gx_checked_total`, and each disagreement in
`orderstream_validation_disagreements_total` and an error log line (that metric must stay 0).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import IO, Protocol

from orderstream import metrics
from orderstream.settings import Settings
from orderstream.validation.evaluator import Rule, rules_of
from orderstream.validation.gx_check import DEFAULT_MERGE_ROWS, CheckJob, CheckReport, check
from orderstream.validation.gx_worker import DEFAULT_GATHER_S, FLUSH

log = logging.getLogger("orderstream.validation")

MAX_RESTARTS = 3
START_TIMEOUT_S = 180.0  # importing GX and building its context, on a loaded machine
WAIT_S = 0.5
PICKLE_PROTOCOL = 5


class CheckerFailed(RuntimeError):
    """The background GX check cannot go on: batches would be produced that GX never checks."""


class Checker(Protocol):
    def rules(self) -> tuple[Rule, ...]: ...

    def submit(self, job: CheckJob) -> None: ...


def record(report: CheckReport) -> None:
    """Count one checked batch and its disagreements, and log each of those."""
    metrics.validation_gx_checked.inc()
    for found in report.disagreements:
        metrics.validation_disagreements.labels(found.reason).inc(found.rows)
        log.error("batch %s: the evaluator and GX disagree on %r: %s", report.batch_id, found.reason, found.detail)


class InlineChecker:
    """GX in this process, before `submit` returns: for callers off the latency path (revalidation, tests)."""

    def rules(self) -> tuple[Rule, ...]:
        return _suite_rules()

    def submit(self, job: CheckJob) -> None:
        for report in check([job]):
            record(report)


@cache
def _suite_rules() -> tuple[Rule, ...]:
    from orderstream.validation.gx_suite import suite_configs

    return rules_of(suite_configs())


@cache
def inline_checker() -> InlineChecker:
    return InlineChecker()


class _Worker:
    """One gx_worker process: jobs pickled to its stdin by a sender thread, reports read from its stdout."""

    def __init__(
        self, merge_rows: int, gather_s: float, on_message: Callable[[_Worker, tuple], None], on_exit: Callable[[_Worker], None]
    ):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "orderstream.validation.gx_worker", "--merge-rows", str(merge_rows),
             "--gather-s", str(gather_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,  # no Ctrl-C mid-check
        )
        self._outbox: queue.Queue[tuple[int, CheckJob | None] | None] = queue.Queue()
        self._on_message, self._on_exit = on_message, on_exit
        threading.Thread(target=self._send, name="gx-check-send", daemon=True).start()
        threading.Thread(target=self._receive, name="gx-check-receive", daemon=True).start()

    def send(self, seq: int, job: CheckJob) -> None:
        self._outbox.put((seq, job))

    def flush(self) -> None:
        """Check what waits now, without gathering more."""
        self._outbox.put(FLUSH)

    def close_input(self) -> None:
        """No more jobs: the worker checks what it has, then exits."""
        self._outbox.put(None)

    def _send(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            while (item := self._outbox.get()) is not None:
                pickle.dump(item, stdin, protocol=PICKLE_PROTOCOL)
                stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker is gone: _receive sees its end and the checker restarts it
        finally:
            _close_quietly(stdin)

    def _receive(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while True:
                self._on_message(self, pickle.load(stdout))
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        finally:
            _close_quietly(stdout)
            self.process.wait()
            self._on_exit(self)


def _close_quietly(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError):  # the other end is gone already
        stream.close()


class BackgroundChecker:
    """GX in a worker process, off the producer's latency path (see the module docstring)."""

    def __init__(
        self, max_rows_behind: int = 100_000, merge_rows: int = DEFAULT_MERGE_ROWS, gather_s: float = DEFAULT_GATHER_S
    ) -> None:
        self.max_rows_behind, self.merge_rows, self.gather_s = max_rows_behind, merge_rows, gather_s
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._pending: dict[int, CheckJob] = {}  # submitted, not yet reported; in submit order
        self._behind = 0
        self._worker: _Worker | None = None
        self._alive = False
        self._rules: tuple[Rule, ...] | None = None
        self._restarts = 0
        self._closed = False

    def rules(self) -> tuple[Rule, ...]:
        with self._cond:
            self._ensure_worker()
            assert self._rules is not None
            return self._rules

    @property
    def pid(self) -> int | None:
        """The worker's process id, None before it starts."""
        return self._worker.process.pid if self._worker is not None else None

    def submit(self, job: CheckJob) -> None:
        with self._cond:
            self._ensure_worker()
            while self._behind and self._behind + len(job.frame) > self.max_rows_behind:
                self._cond.wait(WAIT_S)
                self._ensure_worker()
            seq = next(self._seq)
            self._pending[seq] = job
            self._behind += len(job.frame)
            metrics.validation_gx_behind.set(self._behind)
            assert self._worker is not None
            self._worker.send(seq, job)

    def drain(self, timeout_s: float) -> list[str]:
        """Wait until every submitted batch is checked; the batch ids still unchecked at the deadline."""
        deadline = time.monotonic() + timeout_s
        flushed: _Worker | None = None
        with self._cond:
            while self._pending and time.monotonic() < deadline:
                self._ensure_worker()
                if self._worker is not flushed:  # a restarted worker is asked again
                    assert self._worker is not None
                    self._worker.flush()
                    flushed = self._worker
                self._cond.wait(min(WAIT_S, max(0.0, deadline - time.monotonic())))
            return [job.batch_id for job in self._pending.values()]

    def close(self, timeout_s: float = 60.0) -> None:
        """Check what was submitted, then stop the worker."""
        with self._cond:
            if self._closed:
                return
        missed = self.drain(timeout_s) if self._worker is not None else []
        with self._cond:
            self._closed = True
            worker, self._worker = self._worker, None
        if missed:
            log.error("the GX check stops with %d batches unchecked (no Data Docs for them): %s", len(missed), missed[:5])
        if worker is not None:
            worker.close_input()
            try:
                worker.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                worker.process.kill()

    # --- the worker's lifecycle (called with the lock held) ---

    def _ensure_worker(self) -> None:
        if self._closed:
            raise CheckerFailed("the GX check was closed")
        if self._worker is None or not self._alive:
            self._start_worker()

    def _start_worker(self) -> None:
        if self._worker is not None:
            if self._restarts >= MAX_RESTARTS:
                raise CheckerFailed(
                    f"the GX check process died {self._restarts + 1} times (exit code {self._worker.process.returncode}); "
                    f"{len(self._pending)} batches are unchecked. See its error above."
                )
            self._restarts += 1
            log.error("the GX check process exited with code %s; restarting it with %d unchecked batches",
                      self._worker.process.returncode, len(self._pending))
        self._worker, self._alive = _Worker(self.merge_rows, self.gather_s, self._on_message, self._on_exit), True
        log.info("GX check process %d started", self._worker.process.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._rules is None:
            if not self._alive:
                raise CheckerFailed(f"the GX check process exited with code {self._worker.process.returncode} while starting")
            if time.monotonic() > deadline:
                raise CheckerFailed(f"the GX check process did not start within {START_TIMEOUT_S:.0f} s")
            self._cond.wait(WAIT_S)
        for seq, job in self._pending.items():  # a restarted worker gets every unchecked batch again
            self._worker.send(seq, job)

    def _on_message(self, worker: _Worker, message: tuple) -> None:
        kind, payload = message
        with self._cond:
            if worker is not self._worker:
                return
            if kind == "rules":
                self._rules = rules_of(payload)
            elif kind == "checked":
                for seq, report in payload:
                    job = self._pending.pop(seq, None)
                    if job is None:  # checked twice, across a restart
                        continue
                    self._behind -= len(job.frame)
                    record(report)
                metrics.validation_gx_behind.set(self._behind)
            self._cond.notify_all()

    def _on_exit(self, worker: _Worker) -> None:
        with self._cond:
            if worker is self._worker:
                self._alive = False
            self._cond.notify_all()


_background: BackgroundChecker | None = None
_background_lock = threading.Lock()


def background_checker(max_rows_behind: int, merge_rows: int, gather_s: float) -> BackgroundChecker:
    """The process's background checker (its limits from the first caller), closed at exit."""
    global _background
    with _background_lock:
        if _background is None:
            _background = BackgroundChecker(max_rows_behind, merge_rows, gather_s)
            atexit.register(_background.close)
        return _background



def producer_checker(settings: Settings) -> Checker:
    """Where the producer's batches are checked by GX: `settings.validation_gx_check`."""
    if settings.validation_gx_check == "inline":
        return inline_checker()
    return background_checker(
        settings.validation_gx_max_rows_behind, settings.validation_gx_merge_rows, settings.validation_gx_gather_s
    )


def drain_producer_checks(settings: Settings) -> None:
    """Wait until GX checked every batch this process submitted (a no-op for inline checks)."""
    if settings.validation_gx_check == "inline" or _background is None:
        return
    missed = _background.drain(settings.validation_gx_drain_timeout_s)
    if missed:
        log.error("GX has not checked %d batches after %.0f s (no Data Docs for them yet): %s",
                  len(missed), settings.validation_gx_drain_timeout_s, missed[:5])

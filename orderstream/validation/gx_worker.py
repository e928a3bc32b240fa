"""The background GX check process (`python -m orderstream.validation.gx_worker`), started by `checker.BackgroundChecker`.

Protocol, pickles both ways (parent and child are the same program): it first writes
("rules", the suite's expectation configurations) to stdout, from which the parent's evaluator
works; then it reads (seq, CheckJob) items from stdin and writes ("checked", [(seq, CheckReport), ...])
for the jobs it checked, those that waited together in one GX run (`gx_check.check`). At EOF on
stdin (the parent closed it, or died) it checks what it has and exits 0.

GX costs about 200 ms a run whatever the rows, so a run starts at most every `--gather-s`
seconds and takes every batch that arrived meanwhile: at a steady trickle of small batches, GX
would otherwise run back to back and keep a core busy. `FLUSH` from the parent (it is waiting
for the checks: the end of a pass) starts the next run at once.

Anything else that prints goes to stderr: fd 1 carries the protocol only.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from typing import IO

from orderstream.validation.gx_check import DEFAULT_MERGE_ROWS, CheckJob, check
from orderstream.validation.gx_suite import suite_configs, warm_up

log = logging.getLogger("orderstream.validation.gx_worker")

FLUSH = (-1, None)  # from the parent: check what is waiting now
DEFAULT_GATHER_S = 5.0


class Inbox:
    """Jobs read from stdin by a thread as they come, so the parent never waits on a full pipe."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._jobs: deque[tuple[int, CheckJob]] = deque()
        self._rows = 0  # in the waiting jobs
        self._cond = threading.Condition()
        self._closed = False
        self._flush = False
        threading.Thread(target=self._read, args=(stream,), name="gx-worker-inbox", daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        try:
            while True:
                item = pickle.load(stream)
                with self._cond:
                    if item == FLUSH:
                        self._flush = True
                    else:
                        self._jobs.append(item)
                        self._rows += len(item[1].frame)
                    self._cond.notify()
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify()

    def take(self, max_rows: int, not_before: float = 0.0) -> list[tuple[int, CheckJob]] | None:
        """The jobs waiting (at least one, up to `max_rows` rows), once it is `not_before` (monotonic)
        or `max_rows` are waiting or a flush was asked for; None once the input is closed and all are taken."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            while not (self._closed or self._flush or self._rows >= max_rows) and time.monotonic() < not_before:
                self._cond.wait(not_before - time.monotonic())
            if not self._jobs:
                return None
            taken = [self._jobs.popleft()]
            rows = len(taken[0][1].frame)
            while self._jobs and rows + len(self._jobs[0][1].frame) <= max_rows:
                seq, job = self._jobs.popleft()
                taken.append((seq, job))
                rows += len(job.frame)
            self._rows -= rows
            if not self._jobs:
                self._flush = False  # everything sent before the flush is taken
            return taken


def serve(inbox: Inbox, out: IO[bytes], merge_rows: int, gather_s: float = DEFAULT_GATHER_S) -> None:
    def send(message: tuple) -> None:
        pickle.dump(message, out, protocol=5)
        out.flush()

    send(("rules", list(suite_configs())))
    warm_up()  # the GX context, before the first batch arrives
    next_run = 0.0
    while (taken := inbox.take(merge_rows, next_run)) is not None:
        next_run = time.monotonic() + gather_s
        reports = check([job for _, job in taken], merge_rows)
        send(("checked", [(seq, report) for (seq, _), report in zip(taken, reports)]))


# The check is off the latency path: on a busy machine the producer and the consumers get the
# cores first. Its bounded queue (`max_rows_behind`) keeps it from falling behind for good.
NICENESS = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gx_worker")
    parser.add_argument("--merge-rows", type=int, default=DEFAULT_MERGE_ROWS)
    parser.add_argument("--gather-s", type=float, default=DEFAULT_GATHER_S)
    args = parser.parse_args(argv)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints (GX's, a library's) go to stderr, not into the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it by closing stdin
    os.nice(NICENESS)
    logging.basicConfig(level=logging.INFO, format="gx-check %(levelname)s %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO narration, as in orderstream.logs
    try:
        serve(Inbox(sys.stdin.buffer), out, args.merge_rows, args.gather_s)
    except BrokenPipeError:
        return 0  # the parent is gone: nobody to report to
    return 0


if __name__ == "__main__":
    sys.exit(main())

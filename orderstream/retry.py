"""Exponential backoff: how long to wait before the next attempt at something that failed."""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    """Delays that start at `initial` and double after every wait, up to `maximum`, until `reset`.

    The caller decides when to give up (a number of attempts, a deadline, never), so one
    helper serves the consumer loop, the replay and the Kafka coordinator retries.
    """

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay = initial  # what the next `wait` waits

    def wait(self, sleep: Callable[[float], object] = time.sleep) -> None:
        """Wait the current delay with `sleep` (e.g. a stop signal's interruptible wait), then double it."""
        sleep(self.delay)
        self.delay = min(self.delay * 2, self.maximum)

    def reset(self) -> None:
        """After a success: the next failure waits `initial` again."""
        self.delay = self.initial

"""Small shared pieces: medians over repeats, a warm-up of the in-process pipeline."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterable

from orderstream.errors import UserError

log = logging.getLogger("orderstream.bench")

WARMUP_EVENTS = 500
_warm = False


class CountMismatch(UserError):
    """A run processed a different number of events than it was given: its figure is void."""


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def check_count(what: str, expected: int, got: int) -> None:
    if expected != got:
        raise CountMismatch(f"{what}: {got} processed, {expected} requested")


def warm_up(env) -> float | None:
    """Run the produce flow once on a few events, so that the timed runs of this process
    find Prefect's API server started and the GX context built, as a long-running host does.

    Returns the seconds that first run took (None if this process was warm already).
    """
    global _warm
    if _warm:
        return None
    from flows.produce import produce_orders
    from orderstream.bench.data import copy_events, inventory_frames
    from orderstream.runtime import settings_in_environment

    with env.workspace("warmup") as ws, settings_in_environment(ws.settings):
        copy_events(ws.engine, inventory_frames(WARMUP_EVENTS))
        started = time.perf_counter()
        report = produce_orders()
        elapsed = time.perf_counter() - started
    check_count("warm-up produce", WARMUP_EVENTS, report.counts.produced_inventory)
    _warm = True
    log.info("warm-up: the first produce flow run of this process took %.1f s", elapsed)
    return elapsed

"""The two consumers: `inventory_data_consumer` and `delivery_data_consumer`.

`run_consumer` runs one group member in this process; `run_replicas` runs N of them as
separate processes. Both honour SIGTERM/SIGINT through `orderstream.lifecycle`: finish the
batch, commit, close, return.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
from collections.abc import Mapping
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from orderstream.consumers.runner import BatchConsumer, Handler
from orderstream.consumers.stats import ConsumerStats
from orderstream.errors import UserError
from orderstream.lifecycle import StopSignal, install_signal_handlers, stop_requested
from orderstream.settings import Settings

__all__ = [
    "ConsumerStats",
    "ReplicaFailed",
    "Role",
    "delivery_data_consumer",
    "inventory_data_consumer",
    "make_handler",
    "run_consumer",
    "run_replicas",
    "spawn_consumer",
]

log = logging.getLogger(__name__)

Role = Literal["inventory", "delivery"]


class ReplicaFailed(UserError):
    """A consumer replica process exited with an error."""


def make_handler(settings: Settings, role: Role) -> Handler:
    if role == "inventory":
        from orderstream.consumers.inventory import InventoryHandler

        return InventoryHandler(settings)
    if role == "delivery":
        from orderstream.consumers.delivery import DeliveryHandler

        return DeliveryHandler(settings)
    raise UserError(f"unknown consumer {role!r}: use inventory or delivery")


def run_consumer(
    settings: Settings,
    role: Role,
    *,
    drain: bool,
    metrics_port: int | None,
    stop_event=None,
    client_config: Mapping[str, Any] | None = None,
) -> ConsumerStats:
    """Run one member of the role's consumer group until stopped (or caught up with `drain`).

    `stop_event` (anything with `is_set()`) stops it from outside; so does the process's
    `stop_requested` (SIGTERM/SIGINT; handlers are installed when called from the main
    thread). `client_config` overrides librdkafka settings.
    """
    from orderstream.db.engine import make_engine

    handler = make_handler(settings, role)
    stats = ConsumerStats(role=role, group=settings.groups[role])
    stop = StopSignal(stop_requested, stop_event)
    restore = install_signal_handlers()
    server = None
    try:
        if metrics_port is not None:
            from orderstream import metrics

            server = metrics.serve(metrics_port, settings, role)
        consumer = BatchConsumer(
            settings,
            make_engine(settings.db_url),
            handler,
            drain=drain,
            stop=stop,
            stats=stats,
            client_config=client_config,
        )
        return consumer.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        restore()


def inventory_data_consumer(
    settings: Settings, *, drain: bool = False, metrics_port: int | None = None
) -> ConsumerStats:
    return run_consumer(settings, "inventory", drain=drain, metrics_port=metrics_port)


def delivery_data_consumer(
    settings: Settings, *, drain: bool = False, metrics_port: int | None = None
) -> ConsumerStats:
    return run_consumer(settings, "delivery", drain=drain, metrics_port=metrics_port)


def _replica_main(
    settings: Settings,
    role: Role,
    drain: bool,
    metrics_port: int | None,
    stop_event,
    results,
    client_config: Mapping[str, Any] | None,
) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {role}[%(process)d] %(levelname)s %(message)s")
    stats = run_consumer(
        settings, role, drain=drain, metrics_port=metrics_port, stop_event=stop_event, client_config=client_config
    )
    if results is not None:
        results.put(stats.as_dict())


def spawn_consumer(
    settings: Settings,
    role: Role,
    *,
    drain: bool,
    metrics_port: int | None = None,
    stop_event=None,
    results=None,
    client_config: Mapping[str, Any] | None = None,
) -> BaseProcess:
    """Start one consumer in a fresh (spawned) process; it puts its stats dict on `results`."""
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(
        target=_replica_main,
        args=(settings, role, drain, metrics_port, stop_event, results, client_config),
        name=f"{role}-consumer",
    )
    process.start()
    return process


def run_replicas(
    settings: Settings, role: Role, n: int, drain: bool, metrics_port: int | None
) -> list[ConsumerStats]:
    """Run `n` members of the group as separate processes (metrics on port + i) and wait.

    SIGTERM/SIGINT (the process's `stop_requested`) stop every replica after its current
    batch: the request is forwarded to their shared event. Raises `ReplicaFailed` if any
    replica exited with an error.
    """
    if n < 1:
        raise UserError("--replicas must be at least 1")
    if metrics_port is not None:
        from orderstream import metrics

        metrics.ensure_ports_free(range(metrics_port, metrics_port + n))
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    results = ctx.Queue()
    restore = install_signal_handlers()
    unforward = stop_requested.forward(stop)
    try:
        processes = [
            spawn_consumer(
                settings,
                role,
                drain=drain,
                metrics_port=None if metrics_port is None else metrics_port + i,
                stop_event=stop,
                results=results,
            )
            for i in range(n)
        ]
        collected: list[ConsumerStats] = []
        while any(p.is_alive() for p in processes) or len(collected) < n:
            try:
                collected.append(ConsumerStats.from_dict(results.get(timeout=0.5)))
            except queue.Empty:
                if not any(p.is_alive() for p in processes):
                    break
            if not stop.is_set() and any(p.exitcode not in (None, 0) for p in processes):
                log.error("a %s consumer replica failed: stopping the others", role)
                stop.set()  # all of them or none: a silently shrunken group helps nobody
        for p in processes:
            p.join()
    finally:
        unforward()
        restore()
    failed = [(i, p.exitcode) for i, p in enumerate(processes) if p.exitcode != 0]
    if failed:
        raise ReplicaFailed(
            f"{len(failed)} of {n} {role} consumer replicas failed: "
            + ", ".join(f"replica {i} exit code {code}" for i, code in failed)
        )
    return collected

"""The consumers as flows: long-running deployments, or a drain inside `orderstream run`."""

from __future__ import annotations

from prefect import flow

from orderstream.consumers import Role, run_consumer, run_replicas
from orderstream.runtime import settings_for
from orderstream.stack.secure import CONSUMER_PRINCIPALS


def _consume(role: Role, drain: bool, replicas: int, metrics_port: int | None):
    settings = settings_for(CONSUMER_PRINCIPALS[role])
    if replicas > 1:
        return run_replicas(settings, role, replicas, drain=drain, metrics_port=metrics_port)
    return run_consumer(settings, role, drain=drain, metrics_port=metrics_port)


@flow(name="inventory_data_consumer")
def inventory_data_consumer(drain: bool = False, replicas: int = 1, metrics_port: int | None = None):
    """Reserve stock for inventory events (group `inventory`)."""
    return _consume("inventory", drain, replicas, metrics_port)


@flow(name="delivery_data_consumer")
def delivery_data_consumer(drain: bool = False, replicas: int = 1, metrics_port: int | None = None):
    """Schedule deliveries and move their statuses (group `delivery`)."""
    return _consume("delivery", drain, replicas, metrics_port)

"""`orderstream run`: one whole pass of the pipeline as one flow run."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from flows.consume import delivery_data_consumer, inventory_data_consumer
from flows.notify import notify_customers
from flows.produce import PassReport, produce_orders
from flows.reconcile import reconcile_pipeline
from orderstream.reconcile import Reconciliation
from orderstream.settings import Settings


@dataclass
class RunOutcome:
    settings: Settings
    produced: PassReport
    reconciliation: Reconciliation
    notifications: object


@flow(name="orderstream_run")
def run_pipeline(settings: Settings | None = None) -> RunOutcome:
    """Produce everything new, drain both consumers, reconcile, then notify customers."""
    settings = settings or Settings()
    produced = produce_orders(settings)
    inventory_data_consumer(settings, drain=True)
    delivery_data_consumer(settings, drain=True)
    reconciliation = reconcile_pipeline(settings)
    notifications = notify_customers(settings)
    return RunOutcome(settings, produced, reconciliation, notifications)

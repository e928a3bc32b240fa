"""`orderstream run`: one whole pass of the pipeline as one flow run."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from flows.consume import delivery_data_consumer, inventory_data_consumer
from flows.notify import notify_customers
from flows.produce import produce_orders
from flows.quality import data_quality_report
from flows.reconcile import reconcile_pipeline
from orderstream.notify import NotifyReport
from orderstream.ops.quality import QualityReport
from orderstream.producer.pipeline import PassReport
from orderstream.reconcile import Reconciliation
from orderstream.runtime import settings_for
from orderstream.settings import Settings
from orderstream.stack.secure import ADMIN


@dataclass
class RunOutcome:
    settings: Settings
    produced: PassReport
    reconciliation: Reconciliation
    quality: QualityReport  # where the Data Docs and the markdown report are
    notifications: NotifyReport


@flow(name="orderstream_run")
def run_pipeline() -> RunOutcome:
    """Produce everything new, drain both consumers, reconcile, build the data-quality report and
    its Data Docs, then notify customers."""
    produced = produce_orders()
    inventory_data_consumer(drain=True)
    delivery_data_consumer(drain=True)
    reconciliation = reconcile_pipeline()
    quality = data_quality_report()
    notifications = notify_customers()
    return RunOutcome(settings_for(ADMIN), produced, reconciliation, quality, notifications)

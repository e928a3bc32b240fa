"""The produce pass's Prefect tasks hand their inputs over without Prefect walking them."""

from __future__ import annotations

import pandas as pd
import pytest
from prefect import flow, task

from orderstream.kafka.producer import DeliveryReport
from orderstream.producer.pipeline import SentBatch
from tasks.produce import batch_steps

pytestmark = pytest.mark.integration


class _AcksArriving(list):
    """Positions that gain an acknowledgement whenever they are read, as while the broker answers."""

    def __init__(self, report: DeliveryReport) -> None:
        super().__init__()
        self.report = report

    def __iter__(self):
        self.report.acked += 1
        return super().__iter__()


def test_a_batch_whose_acknowledgements_keep_arriving_reaches_its_finish_task_untouched() -> None:
    report = DeliveryReport(sent=2)
    report.positions = _AcksArriving(report)
    ids = pd.DataFrame({"id": [1], "event_id": ["e1"]})
    batch = SentBatch("b1", 1, None, [ids, ids.iloc[0:0]], ids.iloc[0:0], report, 0.0)  # type: ignore[arg-type]
    received: list = []

    @task
    def finish(batch, settings, producer, sessions):
        received.append(batch)
        return "finished"

    @flow
    def a_pass():
        # Walked by Prefect, the report changed under it and could not be rebuilt (a dataclass
        # with a field outside __init__): "Failed to resolve inputs in parameter 'batch'".
        return batch_steps(finish=finish).finish(batch, None, None, None).result()

    assert a_pass() == "finished"
    assert received == [batch] and received[0] is batch

"""The consumer deployments' `replicas` parameter: one flow run supervises N group members.

The design, stated honestly: `inventory_data_consumer(replicas=N)` is ONE Prefect flow run
whose process spawns N consumer processes (members of the one consumer group, metrics on
port + i); it is not N flow runs. Cancelling the run (the worker SIGTERMs its process group)
or SIGTERM to it stops every member after its batch, and the run completes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import orjson
import pytest
from confluent_kafka import ConsumerGroupState, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderstream.db.models import ProcessedEvent
from orderstream.kafka.clients import connection_config
from orderstream.settings import Settings
from tests.helpers import free_port, orderstream_env, sample, scrape, spawned_children, stop_tree, wait_until

pytestmark = pytest.mark.integration

EVENTS = 2000

# The flow as a deployment's run calls it: settings from the environment, parameters as given.
RUN_FLOW = textwrap.dedent(
    """
    import sys
    from flows.consume import inventory_data_consumer
    state = inventory_data_consumer(replicas=2, metrics_port=int(sys.argv[1]), return_state=True)
    print("FLOW_RUN", state.type.value, state.state_details.flow_run_id, flush=True)
    """
)


def assignments(settings: Settings) -> list[set[int]]:
    """The partitions of each member of the inventory group, once the group is stable."""
    admin = AdminClient(connection_config(settings))
    try:
        group = admin.describe_consumer_groups([settings.inventory_group])[settings.inventory_group].result(timeout=10)
    except (KafkaException, TimeoutError):  # the group does not exist yet, or the coordinator did not answer in time
        return []
    if group.state != ConsumerGroupState.STABLE:
        return []
    return [{tp.partition for tp in m.assignment.topic_partitions} for m in group.members]


def applied(engine, group: str) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).where(ProcessedEvent.consumer_group == group))


def test_the_consumer_flow_with_replicas_2_runs_two_group_members_in_one_flow_run(settings, engine, tmp_path):
    import pandas as pd

    from orderstream.db.engine import session_factory
    from orderstream.source.repository import insert_stock

    with session_factory(engine).begin() as session:
        insert_stock(session, pd.DataFrame([{"sku": "SKU-1", "warehouse_id": "main", "on_hand": "100000"}]))
    port = free_port(2)
    log = tmp_path / "flow.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", RUN_FLOW, str(port)], env=orderstream_env(settings),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        members = wait_until(lambda: (a := assignments(settings)) and len(a) == 2 and all(a) and a, 180,
                             f"2 members in the group, each with partitions; log: {log}", interval=0.5)
        assert sorted(len(parts) for parts in members) == [1, 2]  # 3 partitions over 2 members
        assert len(spawned_children(proc.pid)) == 2  # two consumer processes under the one flow-run process

        producer = Producer(connection_config(settings))
        for i in range(EVENTS):
            event = {"event_id": f"f{i}", "order_id": f"o{i}", "type": "inventory",
                     "created_at": "2026-11-25T10:00:00Z", "sku": "SKU-1", "quantity": "1"}
            producer.produce(settings.inventory_topic, orjson.dumps(event), event["order_id"].encode(),
                             headers=[("event_id", event["event_id"])])
        assert producer.flush(30) == 0
        wait_until(lambda: applied(engine, settings.inventory_group) == EVENTS, 180, f"all applied; log: {log}")

        def applied_per_member() -> list[float]:
            return [sample(scrape(p), "orderstream_messages_processed_total",
                           topic=settings.inventory_topic, outcome="applied") or 0 for p in (port, port + 1)]

        # Counted once the member has seen its transaction commit: a moment after the rows are visible.
        per_member = wait_until(lambda: (n := applied_per_member()) and sum(n) == EVENTS and n, 30,
                                "both members' metrics count every event")
        assert all(n > 0 for n in per_member), per_member
        assert len(assignments(settings)) == 2

        proc.send_signal(signal.SIGTERM)  # what cancelling the run does
        assert proc.wait(120) == 0, log.read_text()[-3000:]
    finally:
        stop_tree(proc)
    line = next(row for row in log.read_text().splitlines() if row.startswith("FLOW_RUN "))
    _, state, run_id = line.split()
    assert state == "COMPLETED", log.read_text()[-3000:]

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert run.parameters["replicas"] == 2 and run.state.is_completed()

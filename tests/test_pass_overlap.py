"""A pass hands its chunks to a `Finishing`: a continuous producer's next pass is extracted, validated
and sent while the last chunk of the pass before still awaits its acknowledgements."""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import nullcontext

import pandas as pd
import pytest

from orderstream.producer.pipeline import Finishing, Steps, produce_pass
from orderstream.producer.progress import BatchCounts

pytestmark = pytest.mark.unit


class Source:
    """Pending rows by id; records each extract's bound."""

    def __init__(self, ids: list[int]) -> None:
        self.ids, self.reads = ids, []

    def extract(self, session, after_id: int, limit: int) -> pd.DataFrame:
        self.reads.append(after_id)
        ids = [i for i in self.ids if i > after_id][:limit]
        return pd.DataFrame({"id": ids, "event_id": [f"e{i}" for i in ids]})


class Acks:
    """Finishing steps whose outcome the test resolves: a chunk finishes when the test says."""

    def __init__(self) -> None:
        self.started: list[list[int]] = []
        self.outcomes: list[Future] = []

    def finish(self, sent, settings, producer, sessions) -> Future:
        self.started.append(list(sent["id"]))
        self.outcomes.append(Future())
        return self.outcomes[-1]

    def ack(self, n: int) -> None:
        ids = self.started[n]
        self.outcomes[n].set_result((BatchCounts(extracted=len(ids), produced_inventory=len(ids)), {}))


def steps(source: Source, acks: Acks) -> Steps:
    return Steps(extract=source.extract, send=lambda frame, settings, producer: frame, finish=acks.finish)


def sessions():
    return nullcontext()


def test_a_pass_with_the_callers_finishing_leaves_its_last_chunk_finishing_for_the_next_pass():
    source, acks = Source([1, 2, 3]), Acks()
    finishing = Finishing(steps(source, acks))
    first = produce_pass(None, None, sessions, chunk_size=10, steps=steps(source, acks), finishing=finishing)
    assert (first.rows_read, first.last_id, first.batches) == (3, 3, 0)  # returned before its acks
    source.ids += [4, 5]
    seen = {}

    def send_before_the_first_chunk_is_acknowledged(frame, settings, producer):
        seen["first chunk finished"] = acks.outcomes[0].done()
        acks.ack(0)  # only now: the hand-over of this chunk waits for it
        return frame

    overlapping = Steps(source.extract, send_before_the_first_chunk_is_acknowledged, acks.finish)
    second = produce_pass(None, None, sessions, chunk_size=10, steps=overlapping, after_id=first.last_id,
                          finishing=finishing)
    assert seen == {"first chunk finished": False}
    assert source.reads == [0, 3] and acks.started == [[1, 2, 3], [4, 5]]
    assert (second.rows_read, second.last_id, second.batches) == (2, 5, 1)  # the first pass's chunk, counted here
    acks.ack(1)
    rest = produce_pass(None, None, sessions, chunk_size=10, steps=steps(source, acks), after_id=5)
    assert rest.rows_read == 0
    finishing.close(rest)
    assert rest.batches == 1 and rest.counts.produced_inventory == 2


def test_a_pass_without_a_finishing_waits_for_its_last_chunk():
    source, acks = Source([1, 2, 3, 4, 5]), Acks()

    def finish(*args):
        outcome = acks.finish(*args)
        acks.ack(len(acks.started) - 1)
        return outcome

    report = produce_pass(None, None, sessions, chunk_size=2, steps=Steps(source.extract, lambda f, s, p: f, finish))
    assert acks.started == [[1, 2], [3, 4], [5]]
    assert (report.batches, report.rows_read, report.last_id, report.counts.extracted) == (3, 5, 5, 5)

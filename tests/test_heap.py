"""A long-running role's long-lived heap is frozen out of Python's cycle collector while it runs."""

from __future__ import annotations

import gc

import pytest

from orderstream.heap import long_lived_heap_frozen

pytestmark = pytest.mark.unit


def test_the_heap_alive_at_entry_is_frozen_in_the_block_and_thawed_after_it():
    before = gc.get_threshold()
    alive = [object() for _ in range(1_000)]
    with long_lived_heap_frozen(young_threshold=50_000):
        assert gc.get_freeze_count() >= len(alive)
        assert gc.get_threshold()[0] == 50_000
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before

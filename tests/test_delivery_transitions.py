"""The delivery state machine, transition by transition, and slot booking: pure functions, no I/O."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict

import pytest

from orderstream.consumers.delivery import book_slot
from orderstream.consumers.transitions import (
    INCOMING_STATUSES,
    SCHEDULED,
    Change,
    Illegal,
    transition,
)

pytestmark = pytest.mark.unit

CURRENT = (None, "requested", "scheduled", "dispatched", "delivered", "cancelled")

LEGAL = {
    (None, "requested"): Change(None, "requested", schedule=True),
    ("scheduled", "dispatched"): Change("scheduled", "dispatched"),
    ("dispatched", "delivered"): Change("dispatched", "delivered"),
    ("requested", "cancelled"): Change("requested", "cancelled", release=True),
    ("scheduled", "cancelled"): Change("scheduled", "cancelled", release=True),
    ("dispatched", "cancelled"): Change("dispatched", "cancelled", release=True),
}

# (current, event status) -> the IllegalTransition message for order o1
ILLEGAL = {
    # a delivery exists already, whatever its status (a duplicate `requested` included)
    ("requested", "requested"): "requested: order o1 already has a delivery (status requested)",
    ("scheduled", "requested"): "requested: order o1 already has a delivery (status scheduled)",
    ("dispatched", "requested"): "requested: order o1 already has a delivery (status dispatched)",
    ("delivered", "requested"): "requested: order o1 already has a delivery (status delivered)",
    ("cancelled", "requested"): "requested: order o1 already has a delivery (status cancelled)",
    # dispatched only from scheduled
    (None, "dispatched"): "dispatched: illegal for order o1, no delivery exists (allowed from scheduled)",
    ("requested", "dispatched"): "dispatched: illegal for order o1, the delivery is requested (allowed from scheduled)",
    ("dispatched", "dispatched"):
        "dispatched: illegal for order o1, the delivery is dispatched (allowed from scheduled)",
    ("delivered", "dispatched"): "dispatched: illegal for order o1, the delivery is delivered (allowed from scheduled)",
    ("cancelled", "dispatched"): "dispatched: illegal for order o1, the delivery is cancelled (allowed from scheduled)",
    # delivered only from dispatched
    (None, "delivered"): "delivered: illegal for order o1, no delivery exists (allowed from dispatched)",
    ("requested", "delivered"): "delivered: illegal for order o1, the delivery is requested (allowed from dispatched)",
    ("scheduled", "delivered"): "delivered: illegal for order o1, the delivery is scheduled (allowed from dispatched)",
    ("delivered", "delivered"): "delivered: illegal for order o1, the delivery is delivered (allowed from dispatched)",
    ("cancelled", "delivered"): "delivered: illegal for order o1, the delivery is cancelled (allowed from dispatched)",
    # cancelled only before delivered, and only once
    (None, "cancelled"):
        "cancelled: illegal for order o1, no delivery exists (allowed from requested|scheduled|dispatched)",
    ("delivered", "cancelled"):
        "cancelled: illegal for order o1, the delivery is delivered (allowed from requested|scheduled|dispatched)",
    ("cancelled", "cancelled"):
        "cancelled: illegal for order o1, the delivery is cancelled (allowed from requested|scheduled|dispatched)",
}


def test_the_cases_cover_every_current_status_and_incoming_status_exactly_once():
    assert set(LEGAL).isdisjoint(ILLEGAL)
    assert set(LEGAL) | set(ILLEGAL) == set(itertools.product(CURRENT, INCOMING_STATUSES))


@pytest.mark.parametrize(("current", "status"), sorted(LEGAL, key=str))
def test_a_legal_move_is_one_change(current, status):
    assert transition(current, status) == LEGAL[(current, status)]


@pytest.mark.parametrize(("current", "status"), sorted(ILLEGAL, key=str))
def test_an_illegal_move_is_refused_with_its_reason(current, status):
    step = transition(current, status)
    assert step == Illegal(status, current)
    assert step.message("o1") == ILLEGAL[(current, status)]


def test_only_requested_schedules_and_only_cancelled_releases():
    changes = [transition(current, status) for current, status in LEGAL]
    assert [(c.to_status, c.schedule, c.release) for c in changes if c.schedule or c.release] == [
        ("requested", True, False), ("cancelled", False, True), ("cancelled", False, True), ("cancelled", False, True)]


def test_the_systems_scheduling_moves_requested_to_scheduled():
    assert Change("requested", "scheduled", schedule=False, release=False) == SCHEDULED


def test_an_unknown_current_status_allows_nothing():
    assert transition("lost", "requested") == Illegal("requested", "lost")
    assert transition("lost", "cancelled") == Illegal("cancelled", "lost")
    assert Illegal("dispatched", "lost").message("o1") == (
        "dispatched: illegal for order o1, the delivery is lost (allowed from scheduled)")


@pytest.mark.parametrize("status", ["scheduled", "shipped", "", None])
def test_a_status_the_parser_would_reject_is_a_programming_error(status):
    with pytest.raises(ValueError, match="not an incoming delivery status"):
        transition("requested", status)


# -- slot booking ------------------------------------------------------------------------------------

DAY1 = dt.date(2026, 11, 26)
DAYS = [DAY1, DAY1 + dt.timedelta(days=1), DAY1 + dt.timedelta(days=2)]


def test_a_booking_takes_the_first_day_with_room_and_counts_it():
    booked = defaultdict(int, {("DE101", DAYS[0]): 3, ("DE101", DAYS[1]): 2})
    assert book_slot(booked, "DE101", DAYS, capacity=3, slots_per_day=2) == (DAYS[1], 0)
    assert booked == {("DE101", DAYS[0]): 3, ("DE101", DAYS[1]): 3}


def test_the_slot_is_the_days_bookings_modulo_the_slots_per_day():
    booked = defaultdict(int, {("DE101", d): 0 for d in DAYS})
    got = [book_slot(booked, "DE101", DAYS, capacity=5, slots_per_day=2) for _ in range(6)]
    assert got == [(DAYS[0], 0), (DAYS[0], 1), (DAYS[0], 0), (DAYS[0], 1), (DAYS[0], 0), (DAYS[1], 0)]


def test_a_full_horizon_books_nothing():
    booked = defaultdict(int, {("DE101", d): 1 for d in DAYS})
    assert book_slot(booked, "DE101", DAYS, capacity=1, slots_per_day=4) is None
    assert booked == {("DE101", d): 1 for d in DAYS}

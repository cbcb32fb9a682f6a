"""Inventory's rules, without a database: movements, low-stock alerts, reservation states.

The property test drives random sequences of reserve / release / commit / return / adjust
through the domain's rules (with an in-memory ledger standing in for the store) and checks after
every step that no counter is negative and that every unit is accounted for.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterns.api import Conflict
from services.inventory.domain import (COMMIT, RELEASE, RESERVE, RESTOCK, RETURN, WRITE_OFF,
                                       InsufficientStock, Line, LowStockSignal, Status, Stock,
                                       fingerprint, low_stock_signal, merge_lines,
                                       status_after_commit, status_after_release,
                                       status_after_return)


def test_reserving_moves_units_from_available_to_reserved():
    stock = Stock("prd_1", available=5).move(RESERVE, 3)
    assert (stock.available, stock.reserved, stock.sold) == (2, 3, 0)


def test_commit_sells_reserved_units_and_release_returns_them():
    held = Stock("prd_1", available=5).move(RESERVE, 3)
    assert (held.move(COMMIT, 2).reserved, held.move(COMMIT, 2).sold) == (1, 2)
    assert (held.move(RELEASE, 3).available, held.move(RELEASE, 3).reserved) == (5, 0)


def test_return_puts_sold_units_back_on_sale():
    sold = Stock("prd_1", available=5).move(RESERVE, 3).move(COMMIT, 3)
    returned = sold.move(RETURN, 3)
    assert (returned.available, returned.reserved, returned.sold) == (5, 0, 0)
    assert RETURN.requires(3) == {"sold": 3}


@pytest.mark.parametrize("movement, quantity", [(RESERVE, 6), (WRITE_OFF, 6), (COMMIT, 1),
                                                (RELEASE, 1), (RETURN, 1)])
def test_a_movement_that_would_go_below_zero_is_refused_naming_the_product(movement, quantity):
    with pytest.raises(InsufficientStock) as refused:
        Stock("prd_1", available=5).move(movement, quantity)
    assert refused.value.status == 409 and refused.value.code == "insufficient_stock"
    assert refused.value.details == {"product_id": "prd_1", "requested": quantity,
                                     "available": 5}


def test_a_movement_states_what_the_database_must_check():
    assert RESERVE.requires(3) == {"available": 3}
    assert RESERVE.changes(3) == {"available": -3, "reserved": 3}
    assert COMMIT.requires(2) == {"reserved": 2}
    assert RESTOCK.requires(9) == {}


def test_low_stock_alerts_once_when_stock_drops_and_rearms_when_it_recovers():
    stock = Stock.new("prd_1", available=12, low_stock_threshold=10)
    assert low_stock_signal(stock) is None
    low = stock.move(RESERVE, 2)
    assert low_stock_signal(low) is LowStockSignal.ALERT
    alerted = replace(low, low_stock_alerted=True)
    assert low_stock_signal(alerted.move(RESERVE, 5)) is None  # still low: no second alert
    assert low_stock_signal(alerted.move(RESTOCK, 1)) is LowStockSignal.REARM


def test_a_record_that_starts_low_does_not_alert():
    assert low_stock_signal(Stock.new("prd_1")) is None


def test_release_and_commit_are_idempotent_and_exclusive():
    assert status_after_release(Status.RESERVED) == Status.RELEASED
    assert status_after_release(Status.PENDING) == Status.RELEASED
    assert status_after_release(Status.RELEASED) == Status.RELEASED
    assert status_after_release(Status.REJECTED) == Status.REJECTED
    assert status_after_commit(Status.RESERVED) == Status.COMMITTED
    assert status_after_commit(Status.COMMITTED) == Status.COMMITTED
    with pytest.raises(Conflict):
        status_after_release(Status.COMMITTED)
    for status in (Status.PENDING, Status.RELEASED, Status.REJECTED, Status.RETURNED):
        with pytest.raises(Conflict):
            status_after_commit(status)


def test_only_a_committed_reservation_is_returned_and_then_it_stays_returned():
    assert status_after_return(Status.COMMITTED) == Status.RETURNED
    for status in Status:
        if status != Status.COMMITTED:
            with pytest.raises(Conflict, match="only a committed one can be returned"):
                status_after_return(status)
    with pytest.raises(Conflict):
        status_after_release(Status.RETURNED)


def test_lines_for_one_product_are_merged_and_fingerprints_ignore_the_split():
    split = [{"product_id": "a", "quantity": 1}, {"product_id": "b", "quantity": 2},
             {"product_id": "a", "quantity": 3}]
    assert merge_lines(split) == (Line("a", 4), Line("b", 2))
    merged = [{"product_id": "a", "quantity": 4}, {"product_id": "b", "quantity": 2}]
    assert fingerprint("ord_1", split) == fingerprint("ord_1", merged)
    assert fingerprint("ord_1", merged) != fingerprint("ord_2", merged)
    assert fingerprint("ord_1", merged) != fingerprint(
        "ord_1", [{"product_id": "a", "quantity": 5}, {"product_id": "b", "quantity": 2}])


# -- random sequences ----------------------------------------------------------------------------

PRODUCTS = ("p1", "p2", "p3")


@dataclass
class Ledger:
    """The store's algorithm in memory: take lines in order; on a short one, give back."""

    stock: dict[str, Stock]
    reservations: list[tuple[tuple[Line, ...], Status]] = field(default_factory=list)
    received: dict[str, int] = field(default_factory=dict)  # restocked minus written off
    alerts: int = 0  # stock.low raised
    drops: int = 0  # times a product went from above its threshold to at or below it
    was_low: dict[str, bool] = field(default_factory=dict)

    def reserve(self, lines: tuple[Line, ...]) -> None:
        taken: list[Line] = []
        try:
            for line in lines:
                self.stock[line.product_id] = self.stock[line.product_id].move(
                    RESERVE, line.quantity)
                taken.append(line)
        except InsufficientStock:
            for line in taken:
                self.stock[line.product_id] = self.stock[line.product_id].move(
                    RELEASE, line.quantity)
            self.reservations.append((lines, Status.REJECTED))
            return
        self.reservations.append((lines, Status.RESERVED))

    def finish(self, index: int, rule, movement) -> None:
        if not self.reservations:
            return
        lines, status = self.reservations[index % len(self.reservations)]
        try:
            target = rule(status)
        except Conflict:
            return
        if target != status and target in (Status.RELEASED, Status.COMMITTED, Status.RETURNED):
            for line in lines:
                self.stock[line.product_id] = self.stock[line.product_id].move(
                    movement, line.quantity)
        self.reservations[index % len(self.reservations)] = (lines, target)

    def adjust(self, product_id: str, add: bool, quantity: int) -> None:
        try:
            self.stock[product_id] = self.stock[product_id].move(
                RESTOCK if add else WRITE_OFF, quantity)
        except InsufficientStock:
            return
        self.received[product_id] += quantity if add else -quantity

    def observe_low_stock(self) -> None:
        for product_id, stock in self.stock.items():
            if stock.is_low and not self.was_low.get(product_id, True):
                self.drops += 1
            self.was_low[product_id] = stock.is_low
            signal = low_stock_signal(stock)
            if signal is LowStockSignal.ALERT:
                self.alerts += 1
            if signal is not None:
                self.stock[product_id] = replace(
                    stock, low_stock_alerted=signal is LowStockSignal.ALERT)

    def held(self, product_id: str, status: Status) -> int:
        return sum(line.quantity for lines, state in self.reservations if state == status
                   for line in lines if line.product_id == product_id)


lines = st.lists(st.builds(Line, st.sampled_from(PRODUCTS), st.integers(1, 8)),
                 min_size=1, max_size=3).map(lambda items: merge_lines(
                     [line.view() for line in items]))
steps = st.lists(st.one_of(
    st.tuples(st.just("reserve"), lines),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("commit"), st.integers(0, 50)),
    st.tuples(st.just("return"), st.integers(0, 50)),
    st.tuples(st.just("adjust"), st.tuples(st.sampled_from(PRODUCTS), st.booleans(),
                                           st.integers(1, 15))),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(initial=st.tuples(*[st.integers(0, 30)] * len(PRODUCTS)), steps=steps)
def test_no_sequence_of_operations_loses_a_unit_or_drives_a_counter_negative(initial, steps):
    ledger = Ledger({product_id: Stock.new(product_id, available, low_stock_threshold=10)
                     for product_id, available in zip(PRODUCTS, initial)},
                    received=dict(zip(PRODUCTS, initial)))
    ledger.observe_low_stock()
    for operation, argument in steps:
        if operation == "reserve":
            ledger.reserve(argument)
        elif operation == "release":
            ledger.finish(argument, status_after_release, RELEASE)
        elif operation == "commit":
            ledger.finish(argument, status_after_commit, COMMIT)
        elif operation == "return":
            ledger.finish(argument, status_after_return, RETURN)
        else:
            ledger.adjust(*argument)
        ledger.observe_low_stock()
        for product_id, stock in ledger.stock.items():
            assert min(stock.available, stock.reserved, stock.sold) >= 0
            assert stock.reserved == ledger.held(product_id, Status.RESERVED)
            assert stock.sold == ledger.held(product_id, Status.COMMITTED)
            assert stock.available + stock.reserved + stock.sold == ledger.received[product_id]
            assert stock.low_stock_alerted == stock.is_low  # alert state follows the stock
        assert ledger.alerts == ledger.drops  # one alert per drop, none while it stays low

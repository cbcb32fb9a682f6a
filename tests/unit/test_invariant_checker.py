"""The invariant checker's rules, over hand-made documents shaped like the services' own.

Each invariant gets a clean world (no violation) and one world per way to break it, so a rule
that stopped looking would fail here. The names the checker reads are checked against the
services' own constants, and `microlab check` against a missing sandbox.
"""

from __future__ import annotations

import pytest

from microlab import checker
from microlab.checker import (CANCELLED_RESTOCKED, CHARGES_MATCH_ORDERS, MONEY_BALANCES,
                              NO_PARKED_EVENTS, PAID_AND_STOCKED, RESERVATIONS_FOR_OPEN_ORDERS,
                              RESERVED_MATCHES, SOLD_MATCHES, STOCK_NOT_NEGATIVE, Snapshot,
                              Violation, cancelled_orders_are_restocked, charges_match_orders,
                              check, confirmed_orders_are_paid_and_stocked, money_balances,
                              no_event_is_parked, reservations_belong_to_open_orders,
                              reserved_stock_matches_reservations, sold_stock_matches_reservations,
                              stock_is_never_negative)
from microlab.cli import NOT_RUNNING, main


def order(order_id: str, status: str, total: int = 1000, payment: str | None = None,
          reservation: str | None = None) -> dict:
    return {"_id": order_id, "status": status, "total_cents": total, "payment_id": payment,
            "reservation_id": reservation}


def payment(payment_id: str, order_id: str, status: str, amount: int = 1000) -> dict:
    return {"_id": payment_id, "order_id": order_id, "status": status, "amount_cents": amount}


def reservation(reservation_id: str, order_id: str, status: str, **lines: int) -> dict:
    return {"_id": reservation_id, "order_id": order_id, "status": status,
            "items": [{"product_id": product, "quantity": quantity}
                      for product, quantity in lines.items()]}


def stock(product_id: str, available: int = 10, reserved: int = 0, sold: int = 0,
          holds: tuple[str, ...] = ()) -> dict:
    return {"_id": product_id, "available": available, "reserved": reserved, "sold": sold,
            "holds": list(holds)}


def world() -> Snapshot:
    """A system at rest after every kind of outcome: a confirmed order; one cancelled after it
    was confirmed (refunded, stock returned); one compensated after the charge (refunded,
    released); one declined (failed charge, released); one still being placed (reserved)."""
    return Snapshot(
        orders=[order("ord_ok", "confirmed", 1000, "pay_ok", "res_ok"),
                order("ord_cancelled", "cancelled", 700, "pay_cancelled", "res_cancelled"),
                order("ord_compensated", "cancelled", 300),
                order("ord_declined", "cancelled", 200),
                order("ord_placing", "pending", 400)],
        payments=[payment("pay_ok", "ord_ok", "captured", 1000),
                  payment("pay_cancelled", "ord_cancelled", "refunded", 700),
                  payment("pay_compensated", "ord_compensated", "refunded", 300),
                  payment("pay_declined", "ord_declined", "failed", 200)],
        reservations=[reservation("res_ok", "ord_ok", "committed", prd_a=2),
                      reservation("res_cancelled", "ord_cancelled", "returned", prd_b=1),
                      reservation("res_compensated", "ord_compensated", "released", prd_a=1),
                      reservation("res_declined", "ord_declined", "released", prd_b=1),
                      reservation("res_placing", "ord_placing", "reserved", prd_a=3)],
        stock=[stock("prd_a", available=5, reserved=3, sold=2, holds=("res_placing",)),
               stock("prd_b", available=9, reserved=0, sold=0)],
        parked_messages={"ns.email.events.dead": 0, "ns.orders.unrouted": 0})


def ids(violations: list[Violation]) -> list[tuple[str, ...]]:
    return [violation.ids for violation in violations]


# -- the whole check ---------------------------------------------------------------------------

def test_a_consistent_world_has_no_violation():
    report = check(world())
    assert report.ok
    assert [invariant.name for invariant, _ in report.results] == [
        PAID_AND_STOCKED, CHARGES_MATCH_ORDERS, CANCELLED_RESTOCKED, STOCK_NOT_NEGATIVE,
        RESERVED_MATCHES, SOLD_MATCHES, RESERVATIONS_FOR_OPEN_ORDERS, MONEY_BALANCES,
        NO_PARKED_EVENTS]
    assert report.text().splitlines()[-1].startswith("✓ all 9 invariants hold over 5 orders")


def test_the_report_names_each_broken_invariant_and_its_ids():
    snapshot = world()
    snapshot.stock[0]["reserved"] = 4
    report = check(snapshot)
    assert not report.ok
    lines = report.text().splitlines()
    assert lines[0].startswith("✓ orders-paid-and-stocked")
    assert lines[4].startswith("✗ reserved-matches-reservations")
    assert lines[5] == "    prd_a: reserved 4, open reservations hold 3"
    assert lines[-1].startswith("✗ 1 violation(s) of 1 of 9 invariants")
    broken = [entry for entry in report.as_json()["invariants"] if not entry["ok"]]
    assert broken == [{"name": RESERVED_MATCHES, "summary": broken[0]["summary"], "ok": False,
                       "violations": [{"ids": ["prd_a"],
                                       "detail": "reserved 4, open reservations hold 3"}]}]


# -- 1. orders and charges ---------------------------------------------------------------------

def paid_and_stocked(snapshot: Snapshot) -> list[Violation]:
    return confirmed_orders_are_paid_and_stocked(snapshot.orders, snapshot.payments,
                                                 snapshot.reservations)


def test_confirmed_orders_with_their_payment_and_stock_pass():
    assert paid_and_stocked(world()) == []


@pytest.mark.parametrize("payment_id", [None, "pay_unknown", "pay_cancelled"])
def test_a_confirmed_order_without_its_captured_payment_is_named(payment_id):
    snapshot = world()
    snapshot.orders[0]["payment_id"] = payment_id  # none, missing, another order's
    assert ids(paid_and_stocked(snapshot)) == [("ord_ok",)]


def test_a_confirmed_order_whose_payment_was_refunded_is_named():
    snapshot = world()
    snapshot.payments[0]["status"] = "refunded"
    [violation] = paid_and_stocked(snapshot)
    assert violation == Violation(PAID_AND_STOCKED, ("ord_ok",), "confirmed, but its payment "
                                  "pay_ok is refunded (should be captured)")


@pytest.mark.parametrize("status", ["reserved", "released"])
def test_a_confirmed_order_whose_stock_is_not_committed_is_named(status):
    snapshot = world()
    snapshot.reservations[0]["status"] = status
    [violation] = paid_and_stocked(snapshot)
    assert violation.ids == ("ord_ok",) and f"res_ok is {status}" in violation.detail


def test_a_confirmed_order_pointing_at_another_orders_reservation_is_named():
    snapshot = world()
    snapshot.orders[0]["reservation_id"] = "res_cancelled"
    [violation] = paid_and_stocked(snapshot)
    assert "res_cancelled belongs to order ord_cancelled" in violation.detail


def test_charges_of_confirmed_and_cancelled_orders_pass_and_failed_ones_are_ignored():
    snapshot = world()
    snapshot.payments.append(payment("pay_lost", "ord_nowhere", "failed"))
    assert charges_match_orders(snapshot.orders, snapshot.payments) == []


@pytest.mark.parametrize("order_id, status, order_state", [
    ("ord_nowhere", "captured", "missing"),          # a charge without an order
    ("ord_compensated", "captured", "cancelled"),    # a compensation that did not refund
    ("ord_placing", "captured", "pending"),          # charged, never confirmed
    ("ord_nowhere", "refunded", "missing"),
    ("ord_ok", "refunded", "confirmed"),             # refunded, yet the order stands
])
def test_a_charge_without_the_matching_order_is_named(order_id, status, order_state):
    snapshot = world()
    snapshot.payments.append(payment("pay_bad", order_id, status, 50))
    [violation] = charges_match_orders(snapshot.orders, snapshot.payments)
    assert violation.ids == ("pay_bad", order_id)
    assert f"{status} 50 cents for order {order_id}, which is {order_state}" in violation.detail


def test_cancelled_orders_whose_confirmed_stock_came_back_pass():
    snapshot = world()
    assert cancelled_orders_are_restocked(snapshot.orders, snapshot.reservations) == []


@pytest.mark.parametrize("reservation_id, status, named", [
    ("res_cancelled", "committed", "reservation res_cancelled is committed"),  # stayed sold
    ("res_gone", "returned", "reservation missing"),
    ("res_ok", "returned", "reservation res_ok belongs to order ord_ok"),
])
def test_a_cancelled_order_whose_stock_was_not_returned_is_named(reservation_id, status, named):
    snapshot = world()
    snapshot.orders[1]["reservation_id"] = reservation_id
    snapshot.reservations[1]["status"] = status
    [violation] = cancelled_orders_are_restocked(snapshot.orders, snapshot.reservations)
    assert violation == Violation(CANCELLED_RESTOCKED, ("ord_cancelled",),
                                  f"cancelled after it was confirmed, but its {named} "
                                  "(should be returned)")


# -- 2. stock ----------------------------------------------------------------------------------

def test_stock_at_zero_is_not_negative():
    assert stock_is_never_negative([stock("prd_a", 0, 0, 0)]) == []


@pytest.mark.parametrize("counter", ["available", "reserved", "sold"])
def test_each_negative_counter_is_named(counter):
    record = {**stock("prd_a"), counter: -1}
    [violation] = stock_is_never_negative([record, stock("prd_b")])
    assert violation.ids == ("prd_a",) and f"{counter} -1" in violation.detail


def test_reserved_stock_counts_reserved_reservations_only():
    snapshot = world()
    assert reserved_stock_matches_reservations(snapshot.stock, snapshot.reservations) == []


@pytest.mark.parametrize("reserved", [2, 4])
def test_reserved_stock_off_by_one_either_way_is_named(reserved):
    snapshot = world()
    snapshot.stock[0]["reserved"] = reserved
    [violation] = reserved_stock_matches_reservations(snapshot.stock, snapshot.reservations)
    assert violation == Violation(RESERVED_MATCHES, ("prd_a",),
                                  f"reserved {reserved}, open reservations hold 3")


def test_a_pending_reservation_counts_the_lines_it_has_taken_so_far():
    records = [stock("prd_a", reserved=2, holds=("res_new",)), stock("prd_b", reserved=0)]
    taking = [reservation("res_new", "ord_new", "pending", prd_a=2, prd_b=5)]
    assert reserved_stock_matches_reservations(records, taking) == []
    records[0]["holds"] = []  # the units were taken without the reservation being listed
    assert ids(reserved_stock_matches_reservations(records, taking)) == [("prd_a",)]


def test_a_reservation_holding_a_product_without_a_stock_record_is_named():
    holding = [reservation("res_x", "ord_x", "reserved", prd_gone=2)]
    [violation] = reserved_stock_matches_reservations([], holding)
    assert violation.ids == ("prd_gone",) and "no stock record" in violation.detail


def test_sold_stock_counts_committed_reservations_not_returned_ones():
    snapshot = world()
    assert sold_stock_matches_reservations(snapshot.stock, snapshot.reservations) == []


@pytest.mark.parametrize("product, sold, took", [("prd_a", 1, 2), ("prd_a", 3, 2),
                                                  ("prd_b", 1, 0)])  # a return that left it sold
def test_sold_stock_off_either_way_is_named(product, sold, took):
    snapshot = world()
    next(record for record in snapshot.stock if record["_id"] == product)["sold"] = sold
    [violation] = sold_stock_matches_reservations(snapshot.stock, snapshot.reservations)
    assert violation == Violation(SOLD_MATCHES, (product,),
                                  f"sold {sold}, committed reservations took {took}")


def test_sold_units_of_a_product_without_a_stock_record_are_named():
    sold = [reservation("res_x", "ord_x", "committed", prd_gone=2)]
    [violation] = sold_stock_matches_reservations([], sold)
    assert violation.ids == ("prd_gone",) and "no stock record" in violation.detail


def test_open_reservations_of_pending_orders_pass():
    snapshot = world()
    assert reservations_belong_to_open_orders(snapshot.reservations, snapshot.orders) == []


@pytest.mark.parametrize("status, order_id, order_state", [
    ("reserved", "ord_compensated", "cancelled"),   # a compensation that did not release
    ("reserved", "ord_ok", "confirmed"),
    ("pending", "ord_nowhere", "missing"),
])
def test_stock_held_for_an_order_that_is_not_open_is_named(status, order_id, order_state):
    snapshot = world()
    snapshot.reservations.append(reservation("res_stuck", order_id, status, prd_a=1))
    [violation] = reservations_belong_to_open_orders(snapshot.reservations, snapshot.orders)
    assert violation.ids == ("res_stuck", order_id)
    assert violation.detail == f"{status}: holds stock for order {order_id}, which is {order_state}"


# -- 3. money ----------------------------------------------------------------------------------

def test_money_balances_when_captured_minus_refunded_is_what_confirmed_orders_cost():
    snapshot = world()
    assert money_balances(snapshot.orders, snapshot.payments) == []


def test_a_double_charge_is_named_per_order_and_in_total():
    snapshot = world()
    snapshot.payments.append(payment("pay_twice", "ord_ok", "captured", 1000))
    assert money_balances(snapshot.orders, snapshot.payments) == [
        Violation(MONEY_BALANCES, ("ord_ok",),
                  "captured − refunded = 2000 cents, confirmed orders owe 1000"),
        Violation(MONEY_BALANCES, (), "in total: captured 3000 − refunded 1000 = 2000 cents, "
                                      "confirmed orders total 1000")]


def test_a_confirmed_order_charged_the_wrong_amount_is_named():
    snapshot = world()
    snapshot.payments[0]["amount_cents"] = 999
    assert ids(money_balances(snapshot.orders, snapshot.payments)) == [("ord_ok",), ()]


def test_money_kept_for_a_cancelled_order_is_named():
    snapshot = world()
    snapshot.payments[2]["status"] = "captured"  # the compensation's refund never happened
    assert ids(money_balances(snapshot.orders, snapshot.payments)) == [("ord_compensated",), ()]


def test_errors_that_cancel_out_in_total_are_still_named_per_order():
    snapshot = world()
    snapshot.payments[0]["amount_cents"] = 900
    snapshot.payments.append(payment("pay_extra", "ord_nowhere", "captured", 100))
    assert ids(money_balances(snapshot.orders, snapshot.payments)) == [("ord_nowhere",),
                                                                       ("ord_ok",)]


# -- 4. events ---------------------------------------------------------------------------------

def test_empty_parking_queues_pass():
    assert no_event_is_parked({"ns.email.events.dead": 0, "ns.users.unrouted": 0}) == []


def test_dead_lettered_and_unrouted_messages_are_counted_per_queue():
    assert no_event_is_parked({"ns.users.unrouted": 1, "ns.email.events.dead": 3,
                               "ns.orders.unrouted": 0}) == [
        Violation(NO_PARKED_EVENTS, ("ns.email.events.dead",), "3 message(s) dead-lettered"),
        Violation(NO_PARKED_EVENTS, ("ns.users.unrouted",), "1 message(s) unrouted")]


def test_parking_queues_are_named_like_the_bus_names_them():
    from patterns.bus import dead_letter_queue, unrouted_queue
    assert checker.parking_queues("ns")[0] == f"ns.{dead_letter_queue('email.events')}"
    assert checker.parking_queues("")[-1] == unrouted_queue("orders")


# -- the names the checker reads are the services' own -------------------------------------------

def test_statuses_and_queue_names_match_the_services():
    from services.email import events as email
    from services.inventory import domain as inventory
    from services.inventory import events as inventory_events
    from services.notifications import events as notifications
    from services.orders import domain as orders
    from services.orders import events as orders_events
    from services.payments import domain as payments
    assert (checker.ORDER_PENDING, checker.ORDER_CONFIRMED, checker.ORDER_CANCELLED) == (
        orders.PENDING, orders.CONFIRMED, orders.CANCELLED)
    assert (checker.PAYMENT_CAPTURED, checker.PAYMENT_REFUNDED) == (payments.CAPTURED,
                                                                    payments.REFUNDED)
    status = inventory.Status
    assert (checker.RESERVATION_PENDING, checker.RESERVATION_RESERVED,
            checker.RESERVATION_COMMITTED, checker.RESERVATION_RETURNED) == (
        status.PENDING, status.RESERVED, status.COMMITTED, status.RETURNED)
    assert checker.STOCK_COUNTERS == inventory.COUNTERS
    assert set(checker.CONSUMER_QUEUES) == {
        email.QUEUE, notifications.QUEUE, inventory_events.PRODUCTS_QUEUE,
        inventory_events.ORDERS_QUEUE, orders_events.INVENTORY_QUEUE}
    assert set(checker.EXCHANGES) == {exchange for exchange, _ in notifications.BINDINGS}


# -- the command -------------------------------------------------------------------------------

def test_check_without_a_sandbox_says_it_is_not_running(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        main(["--run-dir", str(tmp_path), "check"])
    assert stopped.value.code == NOT_RUNNING

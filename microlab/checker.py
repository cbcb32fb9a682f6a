"""`microlab check`: the system's invariants (DESIGN.md, "Invariants"), checked from outside.

What is read, straight from each service's own MongoDB database (the sandbox's `state.json`
names the server; a database is named after its service), every document, no pagination:

    orders.orders            status, total_cents, payment_id, reservation_id
    payments.payments        order_id, amount_cents, status (captured | failed | refunded)
    inventory.reservations   order_id, items [{product_id, quantity}], status
    inventory.stock          available, reserved, sold, holds (reservations holding units)

and, from RabbitMQ, how many messages sit in the namespace's parking queues: each consumer
queue's `<queue>.dead` and each exchange's `<exchange>.unrouted` (`rabbitmqctl list_queues`
when it answers, which also finds parking queues this module does not know by name; else a
passive declare of each known one).

Each invariant is a pure function over those plain dicts, returning the `Violation`s it finds:

1. orders-paid-and-stocked: a confirmed order's `payment_id` is a captured payment of that order
   and its `reservation_id` a committed reservation of that order.
   charges-match-orders: a captured payment belongs to a confirmed order, a refunded one to a
   cancelled order (failed payments moved no money and are ignored).
   cancelled-orders-restocked: a cancelled order that had been confirmed (it names a reservation:
   only confirming sets it) gave its stock back: that reservation of that order is `returned`.
2. stock-not-negative: available, reserved and sold are >= 0 on every stock record.
   reserved-matches-reservations: per product, `reserved` = the units of the reservations that
   are `reserved`, plus those of `pending` ones listed in the record's `holds` (a reservation
   takes its lines one by one while pending).
   sold-matches-reservations: per product, `sold` = the units of the `committed` reservations. A
   returned reservation's units left `sold`, and the only way out of `sold` leads to
   `available`: what was returned is back on sale.
   reservations-for-open-orders: a reservation still holding stock belongs to a pending order
   (one whose saga is still running): otherwise its units are locked for nobody.
3. money-balances: per order, captured − refunded = its total if confirmed, else 0 (in cents);
   and the same in total.
4. no-parked-events: no message in a dead-letter or unrouted queue.

What this cannot prove: that no event was lost or applied twice. A message acknowledged and
dropped by a buggy handler, or one never published, leaves no trace here; events still waiting
in an outbox or a retry queue are in flight, not counted. Check a system at rest: a saga or an
event in flight (a pending order, a reservation between decision and settlement) can show as a
violation for a moment.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pika
from pika.exceptions import ChannelClosedByBroker
from pymongo import MongoClient

Document = Mapping[str, Any]

# Statuses as the services store them (services/*/domain.py).
ORDER_PENDING, ORDER_CONFIRMED, ORDER_CANCELLED = "pending", "confirmed", "cancelled"
PAYMENT_CAPTURED, PAYMENT_REFUNDED = "captured", "refunded"
RESERVATION_PENDING, RESERVATION_RESERVED, RESERVATION_COMMITTED, RESERVATION_RETURNED = (
    "pending", "reserved", "committed", "returned")
STOCK_COUNTERS = ("available", "reserved", "sold")

# What the services publish to and consume from (docs/services.md, services/*/events.py).
EXCHANGES = ("users", "products", "inventory", "payments", "orders")
CONSUMER_QUEUES = ("email.events", "notifications.events", "inventory.products",
                   "inventory.orders", "orders.inventory")
PARKING_SUFFIXES = (".dead", ".unrouted")

PAID_AND_STOCKED = "orders-paid-and-stocked"
CHARGES_MATCH_ORDERS = "charges-match-orders"
CANCELLED_RESTOCKED = "cancelled-orders-restocked"
STOCK_NOT_NEGATIVE = "stock-not-negative"
RESERVED_MATCHES = "reserved-matches-reservations"
SOLD_MATCHES = "sold-matches-reservations"
RESERVATIONS_FOR_OPEN_ORDERS = "reservations-for-open-orders"
MONEY_BALANCES = "money-balances"
NO_PARKED_EVENTS = "no-parked-events"


@dataclass(frozen=True)
class Violation:
    invariant: str
    ids: tuple[str, ...]
    detail: str


@dataclass(frozen=True)
class Snapshot:
    """Everything the invariants look at, read at one moment."""

    orders: list[Document]
    payments: list[Document]
    reservations: list[Document]
    stock: list[Document]
    parked_messages: dict[str, int]  # dead-letter and unrouted queue -> messages in it

    def counts(self) -> dict[str, int]:
        return {"orders": len(self.orders), "payments": len(self.payments),
                "reservations": len(self.reservations), "stock records": len(self.stock),
                "parking queues": len(self.parked_messages)}


def _by_id(documents: Iterable[Document]) -> dict[str, Document]:
    return {document["_id"]: document for document in documents}


def _describe(document: Document | None, kind: str, order_id: str) -> str:
    if document is None:
        return f"{kind} missing"
    if document["order_id"] != order_id:
        return f"{kind} {document['_id']} belongs to order {document['order_id']}"
    return f"{kind} {document['_id']} is {document['status']}"


# -- 1. orders and charges ----------------------------------------------------------------------

def confirmed_orders_are_paid_and_stocked(orders: Sequence[Document],
                                          payments: Sequence[Document],
                                          reservations: Sequence[Document]) -> list[Violation]:
    payments_by_id, reservations_by_id = _by_id(payments), _by_id(reservations)
    found = []
    for order in orders:
        if order["status"] != ORDER_CONFIRMED:
            continue
        for kind, linked, wanted in (
                ("payment", payments_by_id.get(order.get("payment_id")), PAYMENT_CAPTURED),
                ("reservation", reservations_by_id.get(order.get("reservation_id")),
                 RESERVATION_COMMITTED)):
            if linked is None or linked["order_id"] != order["_id"] or linked["status"] != wanted:
                found.append(Violation(PAID_AND_STOCKED, (order["_id"],),
                                       f"confirmed, but its {_describe(linked, kind, order['_id'])}"
                                       f" (should be {wanted})"))
    return found


def charges_match_orders(orders: Sequence[Document],
                         payments: Sequence[Document]) -> list[Violation]:
    orders_by_id = _by_id(orders)
    expected_order_status = {PAYMENT_CAPTURED: ORDER_CONFIRMED, PAYMENT_REFUNDED: ORDER_CANCELLED}
    found = []
    for payment in payments:
        wanted = expected_order_status.get(payment["status"])
        order = orders_by_id.get(payment["order_id"])
        if wanted is None or (order is not None and order["status"] == wanted):
            continue
        order_state = "missing" if order is None else order["status"]
        found.append(Violation(CHARGES_MATCH_ORDERS, (payment["_id"], payment["order_id"]),
                               f"{payment['status']} {payment['amount_cents']} cents for order "
                               f"{payment['order_id']}, which is {order_state} (should be "
                               f"{wanted})"))
    return found


def cancelled_orders_are_restocked(orders: Sequence[Document],
                                   reservations: Sequence[Document]) -> list[Violation]:
    reservations_by_id = _by_id(reservations)
    found = []
    for order in orders:
        if order["status"] != ORDER_CANCELLED or order.get("reservation_id") is None:
            continue  # cancelled by its own saga before it was confirmed: released, not sold
        linked = reservations_by_id.get(order["reservation_id"])
        if (linked is None or linked["order_id"] != order["_id"]
                or linked["status"] != RESERVATION_RETURNED):
            found.append(Violation(CANCELLED_RESTOCKED, (order["_id"],),
                                   f"cancelled after it was confirmed, but its "
                                   f"{_describe(linked, 'reservation', order['_id'])} "
                                   f"(should be {RESERVATION_RETURNED})"))
    return found


# -- 2. stock -----------------------------------------------------------------------------------

def stock_is_never_negative(stock: Sequence[Document]) -> list[Violation]:
    return [Violation(STOCK_NOT_NEGATIVE, (record["_id"],),
                      ", ".join(f"{counter} {record[counter]}" for counter in STOCK_COUNTERS))
            for record in stock if any(record[counter] < 0 for counter in STOCK_COUNTERS)]


def _held_units(stock: Sequence[Document], reservations: Sequence[Document]) -> Counter[str]:
    """Units per product that open reservations hold: all lines of a reserved one, the lines
    a pending one has taken so far (those whose product lists it in `holds`)."""
    holders = {record["_id"]: set(record.get("holds", ())) for record in stock}
    held: Counter[str] = Counter()
    for reservation in reservations:
        for line in reservation["items"]:
            product_id = line["product_id"]
            if (reservation["status"] == RESERVATION_RESERVED or
                    (reservation["status"] == RESERVATION_PENDING
                     and reservation["_id"] in holders.get(product_id, ()))):
                held[product_id] += line["quantity"]
    return held


def reserved_stock_matches_reservations(stock: Sequence[Document],
                                        reservations: Sequence[Document]) -> list[Violation]:
    return _counter_matches(stock, "reserved", _held_units(stock, reservations),
                            RESERVED_MATCHES, "open reservations hold")


def sold_stock_matches_reservations(stock: Sequence[Document],
                                    reservations: Sequence[Document]) -> list[Violation]:
    sold: Counter[str] = Counter()
    for reservation in reservations:
        if reservation["status"] == RESERVATION_COMMITTED:
            for line in reservation["items"]:
                sold[line["product_id"]] += line["quantity"]
    return _counter_matches(stock, "sold", sold, SOLD_MATCHES, "committed reservations took")


def _counter_matches(stock: Sequence[Document], counter: str, expected: Counter[str],
                     invariant: str, source: str) -> list[Violation]:
    """Each stock record's `counter` against the units `source` (the reservations) account for."""
    found = [Violation(invariant, (record["_id"],),
                       f"{counter} {record[counter]}, {source} {expected[record['_id']]}")
             for record in stock if record[counter] != expected[record["_id"]]]
    unknown = sorted(expected.keys() - {record["_id"] for record in stock})
    found += [Violation(invariant, (product_id,),
                        f"{source} {expected[product_id]} units, but it has no stock record")
              for product_id in unknown]
    return found


def reservations_belong_to_open_orders(reservations: Sequence[Document],
                                       orders: Sequence[Document]) -> list[Violation]:
    orders_by_id = _by_id(orders)
    found = []
    for reservation in reservations:
        if reservation["status"] not in (RESERVATION_PENDING, RESERVATION_RESERVED):
            continue
        order = orders_by_id.get(reservation["order_id"])
        if order is None or order["status"] != ORDER_PENDING:
            order_state = "missing" if order is None else order["status"]
            found.append(Violation(RESERVATIONS_FOR_OPEN_ORDERS,
                                   (reservation["_id"], reservation["order_id"]),
                                   f"{reservation['status']}: holds stock for order "
                                   f"{reservation['order_id']}, which is {order_state}"))
    return found


# -- 3. money -----------------------------------------------------------------------------------

def money_balances(orders: Sequence[Document], payments: Sequence[Document]) -> list[Violation]:
    """Captured − refunded = what confirmed orders cost, per order and in total (cents)."""
    kept: defaultdict[str, int] = defaultdict(int)  # captured − refunded, per order
    for payment in payments:
        if payment["status"] == PAYMENT_CAPTURED:
            kept[payment["order_id"]] += payment["amount_cents"]
    owed = {order["_id"]: order["total_cents"] for order in orders
            if order["status"] == ORDER_CONFIRMED}
    found = [Violation(MONEY_BALANCES, (order_id,),
                       f"captured − refunded = {kept[order_id]} cents, confirmed orders owe "
                       f"{owed.get(order_id, 0)}")
             for order_id in sorted(kept.keys() | owed.keys())
             if kept[order_id] != owed.get(order_id, 0)]
    captured = sum(payment["amount_cents"] for payment in payments
                   if payment["status"] in (PAYMENT_CAPTURED, PAYMENT_REFUNDED))
    refunded = sum(payment["amount_cents"] for payment in payments
                   if payment["status"] == PAYMENT_REFUNDED)
    if captured - refunded != sum(owed.values()):
        found.append(Violation(MONEY_BALANCES, (),
                               f"in total: captured {captured} − refunded {refunded} = "
                               f"{captured - refunded} cents, confirmed orders total "
                               f"{sum(owed.values())}"))
    return found


# -- 4. events ----------------------------------------------------------------------------------

def no_event_is_parked(parked_messages: Mapping[str, int]) -> list[Violation]:
    return [Violation(NO_PARKED_EVENTS, (queue,), f"{count} message(s) "
                      f"{'dead-lettered' if queue.endswith('.dead') else 'unrouted'}")
            for queue, count in sorted(parked_messages.items()) if count > 0]


# -- all of them --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Invariant:
    name: str
    summary: str
    check: Callable[[Snapshot], list[Violation]]


INVARIANTS: tuple[Invariant, ...] = (
    Invariant(PAID_AND_STOCKED, "confirmed orders have a captured payment and committed stock",
              lambda s: confirmed_orders_are_paid_and_stocked(s.orders, s.payments,
                                                              s.reservations)),
    Invariant(CHARGES_MATCH_ORDERS, "captured payments belong to confirmed orders, refunded "
                                    "ones to cancelled orders",
              lambda s: charges_match_orders(s.orders, s.payments)),
    Invariant(CANCELLED_RESTOCKED, "cancelled orders that were confirmed have their stock "
                                   "returned",
              lambda s: cancelled_orders_are_restocked(s.orders, s.reservations)),
    Invariant(STOCK_NOT_NEGATIVE, "available, reserved and sold are never negative",
              lambda s: stock_is_never_negative(s.stock)),
    Invariant(RESERVED_MATCHES, "reserved stock equals what open reservations hold",
              lambda s: reserved_stock_matches_reservations(s.stock, s.reservations)),
    Invariant(SOLD_MATCHES, "sold stock equals what committed reservations took",
              lambda s: sold_stock_matches_reservations(s.stock, s.reservations)),
    Invariant(RESERVATIONS_FOR_OPEN_ORDERS, "open reservations belong to pending orders",
              lambda s: reservations_belong_to_open_orders(s.reservations, s.orders)),
    Invariant(MONEY_BALANCES, "captured − refunded = total of confirmed orders",
              lambda s: money_balances(s.orders, s.payments)),
    Invariant(NO_PARKED_EVENTS, "no message in a dead-letter or unrouted queue",
              lambda s: no_event_is_parked(s.parked_messages)),
)


@dataclass(frozen=True)
class Report:
    results: list[tuple[Invariant, list[Violation]]]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return not any(violations for _, violations in self.results)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts, "invariants": [
            {"name": invariant.name, "summary": invariant.summary, "ok": not violations,
             "violations": [{"ids": list(v.ids), "detail": v.detail} for v in violations]}
            for invariant, violations in self.results]}

    def text(self) -> str:
        width = max(len(invariant.name) for invariant, _ in self.results)
        lines = []
        for invariant, violations in self.results:
            lines.append(f"{'✗' if violations else '✓'} {invariant.name:<{width}}  "
                         f"{invariant.summary}")
            lines += [f"    {', '.join(v.ids) + ': ' if v.ids else ''}{v.detail}"
                      for v in violations]
        over = ", ".join(f"{count} {what}" for what, count in self.counts.items())
        broken = sum(1 for _, violations in self.results if violations)
        total = sum(len(violations) for _, violations in self.results)
        lines.append(f"\n✓ all {len(self.results)} invariants hold over {over}" if self.ok else
                     f"\n✗ {total} violation(s) of {broken} of {len(self.results)} invariants, "
                     f"over {over}")
        return "\n".join(lines)


def check(snapshot: Snapshot) -> Report:
    return Report([(invariant, invariant.check(snapshot)) for invariant in INVARIANTS],
                  snapshot.counts())


# -- reading a running sandbox ------------------------------------------------------------------

def _documents(client: MongoClient, service: str, collection: str,
               fields: Iterable[str]) -> list[Document]:
    return list(client[service][collection].find({}, {field: 1 for field in fields}))


def parking_queues(namespace: str) -> list[str]:
    """The dead-letter and unrouted queues of every known consumer queue and exchange."""
    prefix = f"{namespace}." if namespace else ""
    return ([f"{prefix}{queue}.dead" for queue in CONSUMER_QUEUES] +
            [f"{prefix}{exchange}.unrouted" for exchange in EXCHANGES])


def _listed_queue_depths(amqp_url: str) -> dict[str, int] | None:
    """Every queue's depth from `rabbitmqctl`; None when it is missing or does not answer, or
    when the broker is not this machine's own node (rabbitmqctl speaks to the node on the
    default port; a broker in a container, published on another port, gets passive declares)."""
    parameters = pika.URLParameters(amqp_url)
    if not shutil.which("rabbitmqctl") or parameters.port != 5672:
        return None
    vhost = parameters.virtual_host
    result = subprocess.run(["rabbitmqctl", "list_queues", "-p", vhost, "--quiet",
                             "--no-table-headers", "name", "messages"],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return None
    return {name: int(count) for name, count in
            (line.split() for line in result.stdout.splitlines() if line.strip())}


def _declared_queue_depths(amqp_url: str, queues: Iterable[str]) -> dict[str, int]:
    """Depths by passive declares; a queue not declared yet is left out (nothing in it)."""
    depths = {}
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        for queue in queues:
            channel = connection.channel()
            try:
                depths[queue] = channel.queue_declare(queue, passive=True).method.message_count
                channel.close()
            except ChannelClosedByBroker:  # 404: the broker closed this channel
                pass
    finally:
        connection.close()
    return depths


def parked_message_counts(amqp_url: str, namespace: str) -> dict[str, int]:
    """Messages in the namespace's dead-letter and unrouted queues, by queue."""
    known = parking_queues(namespace)
    listed = _listed_queue_depths(amqp_url)
    if listed is None:
        return _declared_queue_depths(amqp_url, known)
    prefix = f"{namespace}."
    return {queue: count for queue, count in listed.items()
            if queue in known or (namespace and queue.startswith(prefix)
                                  and queue.endswith(PARKING_SUFFIXES))}


def read_snapshot(state: Mapping[str, Any]) -> Snapshot:
    """Read a running sandbox (its `state.json`): the services' databases and the broker."""
    client: MongoClient = MongoClient(state["urls"]["mongo"], serverSelectionTimeoutMS=5000)
    try:
        return Snapshot(
            orders=_documents(client, "orders", "orders",
                              ("status", "total_cents", "payment_id", "reservation_id")),
            payments=_documents(client, "payments", "payments",
                                ("order_id", "amount_cents", "status")),
            reservations=_documents(client, "inventory", "reservations",
                                    ("order_id", "items", "status")),
            stock=_documents(client, "inventory", "stock", (*STOCK_COUNTERS, "holds")),
            parked_messages=parked_message_counts(state["amqp_url"], state["namespace"]))
    finally:
        client.close()

"""Inventory in MongoDB: stock records and reservations, each rule one conditional write.

`stock` — one document per product, `_id` = the product id (hot documents are addressed by
`_id`: the embedded server scans for anything else). A movement is one `find_one_and_update`
whose filter says what the counters must hold (`{"available": {"$gte": 3}}` to reserve 3), so
two requests racing for the last units cannot both win: the database applies one, and the
other's filter no longer matches. The document also lists, in `holds`, the reservations that
hold some of its units. Taking units adds the reservation to `holds` in the same write, and
only if it is not there yet; giving them back (or selling them) removes it, and only if it is
there. So each reservation takes a product's units at most once and gives them back at most
once, however often a step is retried or two copies of a request run at the same time.
Returning sold units to available (a cancelled order) is guarded the same way by `returns`, the
reservations whose sold units came back: a reservation's units come back at most once.

`reservations` — one document per reservation, `_id` = `res_…`, with its Idempotency-Key under
a unique index. It is written first (status `pending`), then the lines are taken one by one,
then one conditional status change (`pending` → `reserved` or `rejected`) decides the outcome
and carries its event. Whoever finds a decided reservation brings the stock in line with it
(`_settle`): a rejected or released one gives back every unit it still holds, a committed one
sells them, a returned one puts its sold units back on sale. A process that dies half-way
leaves a `pending` reservation: a repeat of the request (same key) finishes it, and
`recover_abandoned()` (at start, then every 15 s) releases those nobody came back for.

Both collections are outboxes (`patterns.outbox`): `stock.reserved`, `stock.released`,
`stock.returned` and `stock.reservation_failed` ride on the reservation's status change,
`stock.low` on the stock record's alert flag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NoReturn

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from patterns.api import Conflict, NotFound
from patterns.outbox import Outbox
from patterns.clock import stored_time as _moment
from services.inventory import events
from services.inventory.domain import (COMMIT, RELEASE, RESERVE, RETURN, IdempotencyKeyReused,
                                       InsufficientStock, Line, LowStockSignal, Movement,
                                       Reservation, Status, Stock, fingerprint, iso,
                                       low_stock_signal, merge_lines, new_reservation_id,
                                       status_after_commit, status_after_release,
                                       status_after_return)

log = logging.getLogger(__name__)

HOLDS = "holds"
RETURNS = "returns"
_STOCK_FIELDS = ("available", "reserved", "sold", "low_stock_threshold", "low_stock_alerted")
_STOCK_PROJECTION = {field: 1 for field in _STOCK_FIELDS}


class StockStore:
    def __init__(self, outbox: Outbox, *, now: Callable[[], datetime]) -> None:
        self.outbox = outbox
        self.collection = outbox.collection
        self.now = now

    def create(self, stock: Stock) -> bool:
        """Store a new stock record; False if the product has one already."""
        try:
            self.outbox.insert({"_id": stock.product_id, **{
                field: getattr(stock, field) for field in _STOCK_FIELDS}, HOLDS: [], RETURNS: []})
            return True
        except DuplicateKeyError:
            return False

    def find(self, product_id: str) -> Stock | None:
        return _stock(self.collection.find_one({"_id": product_id}, _STOCK_PROJECTION))

    def adjust(self, product_id: str, movement: Movement, quantity: int) -> Stock:
        """Restock or write off; `NotFound` without a record, `InsufficientStock` if short."""
        moved = self._move({"_id": product_id}, movement, quantity)
        if moved is None:
            self._refuse(product_id, quantity)
        self.refresh_low_stock_alert(product_id)
        return moved

    def hold(self, product_id: str, quantity: int, holder: str) -> Stock | None:
        """Reserve units for `holder`. Returns the stock record once they are held (now, as
        this move left it, or by an earlier attempt, as it is now); None if they are not."""
        taken = self._move({"_id": product_id, HOLDS: {"$nin": [holder]}}, RESERVE, quantity,
                           {"$push": {HOLDS: holder}})
        if taken is None:  # short, or held already: then the record lists the holder
            return _stock(self.collection.find_one({"_id": product_id, HOLDS: holder},
                                                   _STOCK_PROJECTION))
        return taken

    def let_go(self, product_id: str, movement: Movement, quantity: int,
               holder: str) -> Stock | None:
        """Release or sell (commit) what `holder` holds; nothing if it holds nothing here.
        Returns the stock record after the move, None if nothing moved."""
        return self._move({"_id": product_id, HOLDS: holder}, movement, quantity,
                          {"$pull": {HOLDS: holder}})

    def take_back(self, product_id: str, quantity: int, holder: str) -> Stock | None:
        """Put `holder`'s sold units back on sale; nothing if they came back already.
        Returns the stock record after the move, None if nothing moved."""
        return self._move({"_id": product_id, RETURNS: {"$nin": [holder]}}, RETURN, quantity,
                          {"$push": {RETURNS: holder}})

    def shortage(self, product_id: str, quantity: int) -> InsufficientStock:
        stock = self.find(product_id)
        return InsufficientStock(product_id, quantity, stock.available if stock else 0)

    def refresh_low_stock_alert(self, product_id: str, stock: Stock | None = None) -> None:
        """Raise stock.low if the product just became low, re-arm the alert if it recovered.
        `stock`: the record as a move just left it (read here if not given).

        The flag flips in a write whose filter re-checks the counters, so an alert goes out
        only if the stock is still low at that moment, and at most once per drop."""
        if stock is None:
            stock = self.find(product_id)
        signal = low_stock_signal(stock) if stock else None
        if signal is None:
            return
        threshold = stock.low_stock_threshold
        if signal is LowStockSignal.ALERT:
            raised = self.outbox.update(
                {"_id": product_id, "low_stock_alerted": False,
                 "available": {"$lte": threshold}},
                {"$set": {"low_stock_alerted": True}}, events.stock_low(stock, self.now()))
            if raised:
                log.warning("stock is low", extra={"product_id": product_id,
                                                   "available": stock.available})
        else:
            self.collection.update_one(
                {"_id": product_id, "low_stock_alerted": True, "available": {"$gt": threshold}},
                {"$set": {"low_stock_alerted": False}})

    def _move(self, selector: dict[str, Any], movement: Movement, quantity: int,
              also: Mapping[str, Any] | None = None) -> Stock | None:
        guard = {counter: {"$gte": least}
                 for counter, least in movement.requires(quantity).items()}
        return _stock(self.collection.find_one_and_update(
            {**selector, **guard}, {"$inc": movement.changes(quantity), **(also or {})},
            projection=_STOCK_PROJECTION, return_document=ReturnDocument.AFTER))

    def _refuse(self, product_id: str, quantity: int) -> NoReturn:
        if self.find(product_id) is None:
            raise NotFound(f"no stock record for product {product_id}")
        raise self.shortage(product_id, quantity)


class ReservationStore:
    def __init__(self, outbox: Outbox, stock: StockStore, *, now: Callable[[], datetime],
                 new_id: Callable[[], str] = new_reservation_id) -> None:
        self.outbox = outbox
        self.collection = outbox.collection
        self.stock = stock
        self.now = now
        self.new_id = new_id
        self.collection.create_index("idempotency_key", unique=True)
        self.collection.create_index("order_id")
        self.collection.create_index([("status", 1), ("created_at", 1)])

    def find(self, reservation_id: str) -> Reservation:
        return _reservation(self._get(reservation_id))

    def reserve(self, order_id: str, items: Iterable[Mapping[str, Any]], key: str, *,
                announce_failure: bool = False) -> dict[str, Any]:
        """Reserve every line or none; the answer is kept under `key` and repeated for it.

        Returns the reservation as first answered; raises `InsufficientStock` (as first
        answered too) if a line was short, `IdempotencyKeyReused` if `key` came with another
        body. `announce_failure` also publishes stock.reservation_failed (choreography)."""
        items = list(items)
        request = fingerprint(order_id, items)
        document = self._open(order_id, merge_lines(items), key, request)
        if document["fingerprint"] != request:
            raise IdempotencyKeyReused(key)
        if document["status"] == Status.PENDING:
            document = self._complete(document, announce_failure)
        return _answer(document)

    def release(self, reservation_id: str) -> Reservation:
        """Give the units back to available (idempotent: they go back once)."""
        return self._change_status(reservation_id, status_after_release)

    def commit(self, reservation_id: str) -> Reservation:
        """Turn the reserved units into sold ones (idempotent)."""
        return self._change_status(reservation_id, status_after_commit)

    def return_sold(self, reservation_id: str, key: str) -> Reservation:
        """Put a committed reservation's sold units back on sale, once: a repeat with `key`
        gets the same answer; any other request finds it returned (409)."""
        document = self._get(reservation_id)
        if document.get("return_key") != key:
            status_after_return(Status(document["status"]))
            now = self.now()
            if self.outbox.update({"_id": reservation_id, "status": Status.COMMITTED},
                                  {"$set": {"status": str(Status.RETURNED), "return_key": key,
                                            "updated_at": now}},
                                  events.stock_returned(_reservation(document), now)):
                log.info("reservation returned", extra={"reservation_id": reservation_id})
            document = self._get(reservation_id)
            if document.get("return_key") != key:  # another request changed it first
                status_after_return(Status(document["status"]))
        self._settle(document)
        return _reservation(document)

    def recover_abandoned(self, older_than: timedelta) -> int:
        """Release reservations left pending by a process that died; returns how many."""
        cutoff = self.now() - older_than
        stale = [document["_id"] for document in self.collection.find(
            {"status": Status.PENDING, "created_at": {"$lt": cutoff}}, {"_id": 1})]
        for reservation_id in stale:
            self.release(reservation_id)
            log.warning("abandoned reservation released", extra={
                "reservation_id": reservation_id})
        return len(stale)

    # -- steps -------------------------------------------------------------------------------
    def _open(self, order_id: str, lines: tuple[Line, ...], key: str,
              request: str) -> dict[str, Any]:
        """A new pending reservation under `key`, or the one a request with `key` made before.
        Inserting first and reading only when the key's unique index refuses the insert spares
        a first request (almost every one) a read."""
        now = self.now()
        document = {"_id": self.new_id(), "order_id": order_id,
                    "items": [line.view() for line in lines], "status": str(Status.PENDING),
                    "idempotency_key": key, "fingerprint": request, "created_at": now,
                    "updated_at": now}
        try:
            self.outbox.insert(document)
            return document
        except DuplicateKeyError:  # a repeat, or a copy of this request a moment ago
            return self.collection.find_one({"idempotency_key": key})

    def _complete(self, document: dict[str, Any], announce_failure: bool) -> dict[str, Any]:
        """Take every line, then decide: reserved, or rejected at the first short line."""
        reservation = _reservation(document)
        shortage = None
        held: dict[str, Stock] = {}
        for line in reservation.lines:
            stock = self.stock.hold(line.product_id, line.quantity, reservation.id)
            if stock is None:
                shortage = self.stock.shortage(line.product_id, line.quantity)
                break
            held[line.product_id] = stock
        now = self.now()
        if shortage is None:
            answer = {**reservation.public_view(), "status": str(Status.RESERVED),
                      "updated_at": iso(now)}
            decision = {"status": str(Status.RESERVED), "answer": answer, "updated_at": now}
            decided = self.outbox.update(
                {"_id": reservation.id, "status": Status.PENDING}, {"$set": decision},
                events.stock_reserved(reservation, now))
        else:
            announcement = ([events.stock_reservation_failed(reservation, shortage, now)]
                            if announce_failure else [])
            decision = {"status": str(Status.REJECTED), "failure": shortage.details,
                        "updated_at": now}
            decided = self.outbox.update(
                {"_id": reservation.id, "status": Status.PENDING}, {"$set": decision},
                *announcement)
        # Decided by us (we know what we wrote), or by a copy that got there first.
        document = ({**document, **decision} if decided else self._get(reservation.id))
        if decided:
            log.info("reservation decided", extra={
                "reservation_id": reservation.id, "order_id": reservation.order_id,
                "status": document["status"]})
        self._settle(document, held)
        return document

    def _change_status(self, reservation_id: str,
                       rule: Callable[[Status], Status]) -> Reservation:
        document = self._get(reservation_id)
        while True:
            current = Status(document["status"])
            target = rule(current)
            if target == current:
                break
            now = self.now()
            announcement = ([events.stock_released(_reservation(document), now)]
                            if target == Status.RELEASED and current == Status.RESERVED else [])
            change = {"status": str(target), "updated_at": now}
            changed = self.outbox.update({"_id": reservation_id, "status": current},
                                         {"$set": change}, *announcement)
            # Changed by us (we know what we wrote), or by someone else first: read it again.
            document = {**document, **change} if changed else self._get(reservation_id)
            if changed:
                log.info("reservation changed", extra={
                    "reservation_id": reservation_id, "from": str(current), "to": str(target)})
                break
            # Someone changed it first: decide again from the status it has now.
        self._settle(document)
        return _reservation(document)

    def _settle(self, document: dict[str, Any], held: Mapping[str, Stock] | None = None) -> None:
        """Bring the stock in line with a decided reservation (safe to repeat). `held`: the
        stock records as the holds just left them, so a reserved line's alert check reads none.
        """
        reservation = _reservation(document)
        if reservation.status == Status.PENDING:
            return  # not decided yet: whoever decides settles
        for line in reservation.lines:
            moved = (held or {}).get(line.product_id)
            if reservation.status == Status.COMMITTED:
                moved = self.stock.let_go(line.product_id, COMMIT, line.quantity, reservation.id)
            elif reservation.status in (Status.REJECTED, Status.RELEASED):
                moved = self.stock.let_go(line.product_id, RELEASE, line.quantity,
                                          reservation.id)
            elif reservation.status == Status.RETURNED:
                # Sell first what a commit cut short left reserved, so there is sold to return.
                self.stock.let_go(line.product_id, COMMIT, line.quantity, reservation.id)
                moved = self.stock.take_back(line.product_id, line.quantity, reservation.id)
            self.stock.refresh_low_stock_alert(line.product_id, moved)

    def _get(self, reservation_id: str) -> dict[str, Any]:
        document = self.collection.find_one({"_id": reservation_id})
        if document is None:
            raise NotFound(f"no reservation {reservation_id}")
        return document


def _answer(document: dict[str, Any]) -> dict[str, Any]:
    """What a request with this reservation's key is answered, the first time and every time."""
    if "answer" in document:
        return document["answer"]
    if document["status"] == Status.REJECTED:
        raise InsufficientStock(**document["failure"])
    raise Conflict("the attempt made with this Idempotency-Key was abandoned and its stock "
                   "released; use a new key", reservation_id=document["_id"],
                   reservation_status=document["status"])


def _stock(document: dict[str, Any] | None) -> Stock | None:
    if document is None:
        return None
    return Stock(product_id=document["_id"], available=document["available"],
                 reserved=document["reserved"], sold=document["sold"],
                 low_stock_threshold=document["low_stock_threshold"],
                 low_stock_alerted=bool(document["low_stock_alerted"]))


def _reservation(document: dict[str, Any]) -> Reservation:
    return Reservation(id=document["_id"], order_id=document["order_id"],
                       lines=tuple(Line(item["product_id"], item["quantity"])
                                   for item in document["items"]),
                       status=Status(document["status"]),
                       created_at=_moment(document["created_at"]),
                       updated_at=_moment(document["updated_at"]))

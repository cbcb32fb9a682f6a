"""The order saga: placing an order across products, inventory and payments, and undoing it.

    validate (products) ─▶ create_order ─▶ reserve_stock ─▶ charge ─▶ confirm
                           undo: cancel    undo: release    undo: refund

- validate: every product exists and is for sale; its current price is snapshotted. A failure
  here ends the saga before anything was changed (422).
- create_order: the order is stored `pending` and `order.created` announced.
- reserve_stock / charge: calls to inventory and payments with the step's idempotency key, so a
  step repeated after a crash or a retry is applied once by the service it calls.
- confirm: commit the reservation and mark the order `confirmed`; the events announcing it go
  out through the outbox in that same write (that is the "notify" step of the lesson: folded
  into confirm, it cannot fail on its own).

When a step fails, the orchestrator (patterns.saga) undoes the steps done, in reverse: refund,
release, cancel (the order keeps the reason). A compensation that fails (its peer is down)
leaves the saga `compensating`; `SagaRecovery` tries again every few seconds.

Cancelling a confirmed order (`cancel_order` saga): refund the payment, return the stock
(inventory puts the reservation's sold units back on sale), then mark the order cancelled. Each
call carries its step's key and treats "already done" (409) as done, so a cancel that failed
half-way (a peer down: 503, the order still confirmed) is finished by cancelling again.

Peers are called through `kit.peer(...)` (timeouts, a circuit breaker per peer, retries for the
calls carrying an Idempotency-Key) with a short-lived service token (`svc:orders`, admin).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from patterns.api import ApiError
from patterns.breaker import CircuitOpenError
from patterns.http import (BulkheadFull, ServiceError, ServiceUnavailable, json_of,
                           may_have_arrived)
from patterns.saga import (COMPENSATING, COMPLETED, MongoSagaLog, Saga, SagaOrchestrator,
                           SagaRecord, Step, StepContext)
from patterns.service import ServiceKit
from services.orders import domain
from services.orders.domain import (InsufficientStock, OrderFailed, PaymentDeclined,
                                    PeerRejected, PeerUnavailable)
from services.orders.store import OrderStore, now

log = logging.getLogger(__name__)

PLACE_ORDER, CANCEL_ORDER = "place_order", "cancel_order"


def _error_message(error: ServiceError) -> str:
    if isinstance(error.body, dict) and isinstance(error.body.get("error"), dict):
        return str(error.body["error"].get("message", ""))
    return str(error.body)[:200]


class Peers:
    """Products, inventory and payments as the saga needs them; their failures as the saga's."""

    def __init__(self, kit: ServiceKit) -> None:
        self.kit = kit

    def call(self, peer: str, method: str, path: str, *, body: Any = None,
             key: str | None = None, params: Mapping[str, str] | None = None) -> Any:
        """One call to a peer; raises PeerUnavailable when it did not answer, ServiceError for
        its 4xx answers (what they mean is the caller's business)."""
        token = self.kit.tokens.issue("svc:orders", roles=["admin"])
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        try:
            response = self.kit.peer(peer).request(method, path, json=body, headers=headers,
                                                   params=params)
        except ServiceError as error:
            if error.status >= 500:
                raise PeerUnavailable(peer, f"{peer} answered {error.status}: "
                                            f"{_error_message(error)}") from error
            raise
        except (ServiceUnavailable, CircuitOpenError, BulkheadFull) as error:
            raise PeerUnavailable(peer, f"{peer} is unavailable: {error}",
                                  may_have_applied=may_have_arrived(error)) from error
        return json_of(response)

    # -- products --------------------------------------------------------------------------
    def product(self, product_id: str) -> dict[str, Any] | None:
        try:
            return self.call("products", "GET", f"/api/v1/products/{quote(product_id, safe='')}")
        except ServiceError as error:
            if error.status == 404:
                return None
            raise PeerRejected(f"products refused: {_error_message(error)}") from error

    # -- inventory -------------------------------------------------------------------------
    def reserve_stock(self, order_id: str, items: list[dict[str, Any]], key: str) -> str:
        body = {"order_id": order_id, "items": [
            {"product_id": item["product_id"], "quantity": item["quantity"]} for item in items]}
        try:
            reservation = self.call("inventory", "POST", "/api/v1/inventory/reservations",
                                    body=body, key=key)
        except ServiceError as error:
            if error.status == 409:
                raise InsufficientStock(f"not enough stock: {_error_message(error)}") from error
            raise PeerRejected(f"inventory refused the reservation: "
                               f"{_error_message(error)}") from error
        return reservation["id"]

    def release_reservation(self, reservation_id: str, key: str) -> None:
        self._undo("inventory", f"/api/v1/inventory/reservations/{reservation_id}/release", key)

    def return_stock(self, reservation_id: str, key: str) -> None:
        self._undo("inventory", f"/api/v1/inventory/reservations/{reservation_id}/return", key)

    def commit_reservation(self, reservation_id: str, key: str) -> None:
        try:
            self.call("inventory", "POST",
                      f"/api/v1/inventory/reservations/{reservation_id}/commit", key=key)
        except ServiceError as error:
            raise PeerRejected(f"inventory refused the commit: {_error_message(error)}") from error

    # -- payments --------------------------------------------------------------------------
    def charge(self, order: Mapping[str, Any], key: str) -> str:
        body = {"order_id": order["_id"], "user_id": order["user_id"],
                "amount_cents": order["total_cents"]}
        try:
            return self.call("payments", "POST", "/api/v1/payments/charges",
                             body=body, key=key)["id"]
        except ServiceError as error:
            if error.status == 402:
                # Payments' message says it already: "the payment was declined: <reason>".
                raise PaymentDeclined(_error_message(error)) from error
            raise PeerRejected(f"payments refused the charge: {_error_message(error)}") from error
        except PeerUnavailable:
            # No answer may still mean it was charged (the answer was lost): ask before giving up.
            try:
                captured = self.captured_payment(order["_id"])
            except (PeerUnavailable, PeerRejected):
                captured = None  # can't tell now: the saga's compensation asks again
            if captured is None:
                raise
            return captured

    def refund(self, payment_id: str, key: str) -> None:
        self._undo("payments", f"/api/v1/payments/{payment_id}/refund", key)

    def captured_payment(self, order_id: str) -> str | None:
        """The order's captured payment, if any; raises PeerUnavailable when payments cannot say."""
        try:
            found = self.call("payments", "GET", "/api/v1/payments", params={"order_id": order_id})
        except ServiceError as error:
            raise PeerRejected(f"payments refused the lookup: {_error_message(error)}") from error
        captured = [p["id"] for p in found["items"] if p["status"] == "captured"]
        return captured[0] if captured else None

    def _undo(self, peer: str, path: str, key: str) -> None:
        """A compensating call; "nothing to undo" (404, 409) is success. Raises otherwise, so the
        saga stays compensating and recovery tries again."""
        try:
            self.call(peer, "POST", path, key=key)
        except ServiceError as error:
            if error.status not in (404, 409):
                raise
            log.info("nothing to undo", extra={"peer": peer, "path": path,
                                               "status": error.status})


def answer_was_lost(error: Exception) -> bool:
    """Did a failed call perhaps take effect? Only a peer that may have got the request and
    whose answer never came back (a 5xx or a dropped connection) leaves us unsure."""
    return isinstance(error, PeerUnavailable) and error.may_have_applied


class OrderSagaLog(MongoSagaLog):
    """The saga log, aware of the sagas this process is driving right now.

    Recovery (`unfinished()`) skips them, so a recovery pass never drives a saga a request
    thread is still driving. Sagas it hands out are claimed until `release()`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._driving: set[str] = set()
        self._claimed: set[str] = set()
        self._lock = threading.Lock()

    @contextmanager
    def driving(self, saga_id: str) -> Iterator[None]:
        with self._lock:
            self._driving.add(saga_id)
        try:
            yield
        finally:
            self.release([saga_id])

    def unfinished(self) -> list[SagaRecord]:
        records = super().unfinished()
        with self._lock:
            free = [record for record in records if record.id not in self._driving]
            self._driving.update(record.id for record in free)
            self._claimed.update(record.id for record in free)
        return free

    def release(self, saga_ids: list[str]) -> None:
        with self._lock:
            self._driving.difference_update(saga_ids)

    def release_claimed(self) -> None:
        """Forget the sagas `unfinished()` handed out (once recovery is done with them)."""
        with self._lock:
            self._driving.difference_update(self._claimed)
            self._claimed.clear()


class OrderSagas:
    """Runs the order sagas and turns their outcome into an answer."""

    def __init__(self, orders: OrderStore, peers: Peers, saga_log: OrderSagaLog) -> None:
        self.orders = orders
        self.peers = peers
        self.saga_log = saga_log
        self._failures: dict[str, ApiError] = {}  # saga id -> why it failed, for the answer
        self._confirmed: dict[str, dict[str, Any]] = {}  # saga id -> the order it confirmed
        self.orchestrator = SagaOrchestrator(saga_log, Saga(PLACE_ORDER, [
            Step("validate", self._remembered(self.validate)),
            Step("create_order", self._remembered(self.create_order),
                 compensation=self.cancel_order),
            # A reservation or a charge whose answer was lost may have happened all the same:
            # then it is compensated too, and the compensation asks the peer first.
            Step("reserve_stock", self._remembered(self.reserve_stock),
                 compensation=self.release_stock, may_have_applied=answer_was_lost),
            Step("charge", self._remembered(self.charge), compensation=self.refund,
                 may_have_applied=answer_was_lost),
            Step("confirm", self._remembered(self.confirm)),
        ]), Saga(CANCEL_ORDER, [
            Step("refund_payment", self._remembered(self.refund_confirmed)),
            Step("return_stock", self._remembered(self.return_sold_stock)),
            Step("mark_cancelled", self._remembered(self.mark_cancelled)),
        ]))

    # -- entry points ----------------------------------------------------------------------
    def place(self, order_id: str, user_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Run the saga for a new order: the confirmed order, or the error saying why not."""
        saga_id = domain.new_id("sag")
        data = {"order_id": order_id, "user_id": user_id, "items": items}
        try:
            return self._outcome(self._run(PLACE_ORDER, data, saga_id), order_id)
        finally:
            self._confirmed.pop(saga_id, None)

    def cancel(self, order: Mapping[str, Any]) -> dict[str, Any]:
        domain.check_cancellable(order)
        data = {"order_id": order["_id"], "payment_id": order["payment_id"],
                "reservation_id": order["reservation_id"]}
        return self._outcome(self._run(CANCEL_ORDER, data, domain.new_id("sag")), order["_id"])

    def recover(self) -> list[SagaRecord]:
        """Finish or compensate every saga left unfinished (by a crash, or a compensation whose
        peer was down), except those this process is driving now."""
        try:
            records = self.orchestrator.recover()
        finally:
            self.saga_log.release_claimed()
        for record in records:
            self._confirmed.pop(record.id, None)
            if record.status != COMPENSATING:
                self._failures.pop(record.id, None)
        return records

    def _run(self, saga: str, data: dict[str, Any], saga_id: str) -> SagaRecord:
        with self.saga_log.driving(saga_id):
            return self.orchestrator.run(saga, data, saga_id=saga_id)

    def _outcome(self, record: SagaRecord, order_id: str) -> dict[str, Any]:
        # A saga still compensating keeps its failure: the cancel that ends it stores the reason.
        failure = (self._failures.get(record.id) if record.status == COMPENSATING
                   else self._failures.pop(record.id, None))
        if record.status == COMPLETED:
            # The order as the confirm step wrote it; read when another pass confirmed it.
            return self._confirmed.get(record.id) or self.orders.get(order_id)
        if failure is None:  # not a step's own refusal: a bug or the database; see the log
            failure = OrderFailed(f"the order could not be completed ({record.error})")
        if self.orders.get(order_id) is not None:
            failure.details["order_id"] = order_id
        if record.status == COMPENSATING:
            failure.message += "; undoing what was done will be retried"
        raise failure

    def _remembered(self, action: Callable[[StepContext], Any]) -> Callable[[StepContext], Any]:
        """The action, remembering a refusal so the answer (and the order) can say why."""
        def run(context: StepContext) -> Any:
            try:
                return action(context)
            except ApiError as error:
                self._failures[context.saga_id] = error
                raise
        run.__name__ = action.__name__
        return run

    def _reason(self, saga_id: str) -> str:
        """Why the order is cancelled: the step's own refusal if this process saw it, else the
        generic "saga_failed" (after a restart; the saga log keeps the error)."""
        failure = self._failures.get(saga_id)
        if isinstance(failure, OrderFailed):
            return failure.details["reason"]
        return "saga_failed"

    # -- place_order steps ---------------------------------------------------------------------
    def validate(self, context: StepContext) -> dict[str, Any]:
        items = context.data["items"]
        domain.check_distinct(items)
        products = {}
        for item in items:
            product = self.peers.product(item["product_id"])
            if product is not None:
                products[item["product_id"]] = product
        lines, total = domain.price_items(items, products)
        return {"lines": lines, "total_cents": total}

    def create_order(self, context: StepContext) -> None:
        data = context.data
        order = domain.new_order(data["order_id"], data["user_id"], data["lines"],
                                 data["total_cents"], context.saga_id, domain.ORCHESTRATION,
                                 now=now())
        if self.orders.create(order):
            log.info("order accepted", extra={"order_id": order["_id"], "saga_id": context.saga_id})

    def cancel_order(self, context: StepContext) -> None:
        reason = self._reason(context.saga_id)
        if self.orders.cancel(context.data["order_id"], reason):
            log.info("order cancelled", extra={"order_id": context.data["order_id"],
                                               "reason": reason})

    def reserve_stock(self, context: StepContext) -> dict[str, Any]:
        reservation_id = self.peers.reserve_stock(context.data["order_id"], context.data["lines"],
                                                  key=context.idempotency_key)
        return {"reservation_id": reservation_id}

    def release_stock(self, context: StepContext) -> None:
        reservation_id = context.data.get("reservation_id")
        if reservation_id is None:
            # The reserve step failed: asking again with its key returns the reservation it made
            # if the first answer was lost (or makes one, released at once: no net effect).
            try:
                reservation_id = self.peers.reserve_stock(
                    context.data["order_id"], context.data["lines"],
                    key=f"{context.saga_id}:reserve_stock")
            except (InsufficientStock, PeerRejected):
                return  # inventory refused it: nothing was reserved
        self.peers.release_reservation(reservation_id, key=context.idempotency_key)

    def charge(self, context: StepContext) -> dict[str, Any]:
        order = {"_id": context.data["order_id"], "user_id": context.data["user_id"],
                 "total_cents": context.data["total_cents"]}
        return {"payment_id": self.peers.charge(order, key=context.idempotency_key)}

    def refund(self, context: StepContext) -> None:
        payment_id = context.data.get("payment_id")
        if payment_id is None:
            # The charge step failed: a lost answer may hide a capture. Raises while payments
            # cannot be asked, so recovery asks again later.
            payment_id = self.peers.captured_payment(context.data["order_id"])
            if payment_id is None:
                return
        self.peers.refund(payment_id, key=context.idempotency_key)

    def confirm(self, context: StepContext) -> None:
        data = context.data
        self.peers.commit_reservation(data["reservation_id"], key=context.idempotency_key)
        confirmed = self.orders.confirm(data["order_id"], payment_id=data["payment_id"],
                                        reservation_id=data["reservation_id"])
        if confirmed:
            self._confirmed[context.saga_id] = confirmed
            log.info("order confirmed", extra={"order_id": data["order_id"],
                                               "payment_id": data["payment_id"]})

    # -- cancel_order steps --------------------------------------------------------------------
    def refund_confirmed(self, context: StepContext) -> None:
        self.peers.refund(context.data["payment_id"], key=context.idempotency_key)

    def return_sold_stock(self, context: StepContext) -> None:
        self.peers.return_stock(context.data["reservation_id"], key=context.idempotency_key)

    def mark_cancelled(self, context: StepContext) -> None:
        self.orders.cancel(context.data["order_id"], "cancelled_by_request")


class SagaRecovery:
    """Runs `OrderSagas.recover()` on a background thread: once at start, then every `interval`
    seconds (for compensations that failed because a peer was down)."""

    def __init__(self, sagas: OrderSagas, interval: float = 10.0) -> None:
        self.sagas = sagas
        self.interval = interval
        self.passes = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saga-recovery", daemon=True)

    def start(self) -> SagaRecovery:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run_once(self) -> list[SagaRecord]:
        records = self.sagas.recover()
        for record in records:
            log.warning("saga recovered", extra={"saga_id": record.id, "saga": record.saga,
                                                 "status": record.status,
                                                 "order_id": record.data.get("order_id")})
        self.passes += 1
        return records

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
            except Exception:  # the database may be down: try again next pass
                log.exception("saga recovery pass failed")
            self._stopping.wait(self.interval)

"""Payments' MongoDB adapter: payments (with their outbox) and provider settings.

The payment document is also the idempotency record: a charge's `_id` comes from its key and
it keeps the response that was sent (`charge_response`); a refund stores its key (unique) and
its response (`refund_response`) in the same write that marks the payment refunded. So the
result and the key that produced it can never be separated by a crash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from patterns.api import NotFound
from patterns.outbox import Outbox
from patterns.clock import iso_utc as iso
from patterns.paging import read_page
from services.payments import events
from services.payments.domain import CAPTURED, REFUNDED, IdempotencyKeyReused, Provider

Response = tuple[int, dict[str, Any]]


def public(payment: Mapping[str, Any]) -> dict[str, Any]:
    """A payment as the API shows it."""
    return {"id": payment["_id"], "order_id": payment["order_id"],
            "user_id": payment["user_id"], "amount_cents": payment["amount_cents"],
            "provider": payment["provider"], "status": payment["status"],
            "reason": payment.get("reason"), "created_at": iso(payment["created_at"]),
            "refunded_at": iso(payment.get("refunded_at"))}


def stored_response(payment: Mapping[str, Any], field: str) -> Response:
    response = json.loads(payment[field])
    return response["status"], response["body"]


class PaymentStore:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.payments: Collection = outbox.collection
        self.payments.create_index("order_id")
        self.payments.create_index("user_id")
        self.payments.create_index("refund_key", unique=True, sparse=True)

    def get(self, payment_id: str) -> dict[str, Any] | None:
        return self.payments.find_one({"_id": payment_id})

    def record_charge(self, payment: dict[str, Any], response: Response) -> bool:
        """Store a charge with the response it gets; False if its key was used already."""
        status, body = response
        try:
            self.outbox.insert({**payment, "charge_response": json.dumps(
                {"status": status, "body": body})}, events.payment_charged(payment))
            return True
        except DuplicateKeyError:
            return False

    def record_refund(self, payment: Mapping[str, Any], key: str, now: datetime) -> bool:
        """Mark a captured payment refunded under `key`; False if it was not captured any more.

        Raises IdempotencyKeyReused when `key` already refunded another payment."""
        refunded = {**payment, "status": REFUNDED, "refunded_at": now}
        response = json.dumps({"status": 200, "body": public(refunded)})
        try:
            return self.outbox.update(
                {"_id": payment["_id"], "status": CAPTURED},
                {"$set": {"status": REFUNDED, "refunded_at": now, "refund_key": key,
                          "refund_response": response}},
                events.payment_refunded(payment))
        except DuplicateKeyError:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used to refund another payment") from None

    def search(self, criteria: Mapping[str, Any], page: int, limit: int
               ) -> tuple[list[dict[str, Any]], int]:
        found = read_page(self.payments, criteria, sort=[("created_at", DESCENDING)],
                          skip=(page - 1) * limit, limit=limit)
        return [public(payment) for payment in found.items], found.total


class ProviderStore:
    """Each provider's settings, one document per provider, kept across restarts.

    A charge reads its provider's settings; they are kept for `fresh_for` seconds instead of
    read for every charge. A change made through this store shows at once; one made by another
    replica of payments within `fresh_for` seconds."""

    def __init__(self, collection: Collection, defaults: Iterable[Provider], *,
                 fresh_for: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.collection = collection
        self.fresh_for = fresh_for
        self.clock = clock
        self._kept: dict[str, tuple[float, Provider]] = {}  # name -> (read at, settings)
        for provider in defaults:
            settings = provider.as_dict()
            self.collection.update_one({"_id": settings.pop("name")},
                                       {"$setOnInsert": settings}, upsert=True)

    def all(self) -> list[Provider]:
        return [self._provider(document) for document in self.collection.find().sort("_id")]

    def get(self, name: str) -> Provider:
        now = self.clock()
        read_at, provider = self._kept.get(name, (None, None))
        if provider is not None and now - read_at < self.fresh_for:
            return provider
        document = self.collection.find_one({"_id": name})
        if document is None:
            raise NotFound(f"no provider named {name!r}", provider=name)
        provider = self._provider(document)
        self._kept[name] = (now, provider)
        return provider

    def save(self, provider: Provider) -> None:
        settings = provider.as_dict()
        self.collection.replace_one({"_id": settings.pop("name")}, settings)
        self._kept.pop(provider.name, None)

    @staticmethod
    def _provider(document: Mapping[str, Any]) -> Provider:
        # bool(): a flag written by $set comes back as 1/0 from the embedded MongoDB.
        return Provider(name=document["_id"], failure_rate=float(document["failure_rate"]),
                        latency_ms=int(document["latency_ms"]), down=bool(document["down"]))

"""Payments' rules: simulated providers, what a charge and a refund may do, and idempotency keys.

No I/O here except the simulated provider's latency, which is an injected `sleep`.

- A provider (`stripe-sim`, `paypal-sim`) has a `failure_rate` (0..1, the share of charges it
  declines), a `latency_ms` (how long it takes to answer) and a `down` flag (it does not answer
  at all). Its decision for a charge comes from a random generator seeded with the service's
  seed *and the charge's idempotency key*: a run is reproducible, and asking the provider again
  with the same key gets the same answer, as with a real provider that honours keys.
- A charge is stored once per idempotency key: its id is derived from the key, so a second
  insert for the same key is a duplicate-key error, never a second payment.
- Only a captured payment can be refunded, and only in full (partial refunds are left out to
  keep the money arithmetic obvious: captured - refunded = total of confirmed orders).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from patterns.api import ApiError, Conflict, Forbidden, NotFound, Unprocessable
from patterns.auth import Claims

CAPTURED, FAILED, REFUNDED = "captured", "failed", "refunded"
DEFAULT_PROVIDER = "stripe-sim"
MAX_LATENCY_MS = 10_000


class PaymentDeclined(ApiError):
    status, code = 402, "payment_declined"


class ProviderUnavailable(ApiError):
    status, code = 503, "provider_unavailable"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class NotRefundable(Conflict):
    code = "not_refundable"


@dataclass(frozen=True)
class Provider:
    name: str
    failure_rate: float = 0.0
    latency_ms: int = 0
    down: bool = False

    def with_changes(self, changes: Mapping[str, Any]) -> Provider:
        """These settings with some of them changed (what `PUT /payments/providers/<name>` does)."""
        unknown = set(changes) - {"failure_rate", "latency_ms", "down"}
        if unknown:
            raise Unprocessable(f"unknown provider settings: {sorted(unknown)}")
        updated = replace(self, **changes)
        if not 0 <= updated.failure_rate <= 1:
            raise Unprocessable("failure_rate is a fraction between 0 and 1")
        if not 0 <= updated.latency_ms <= MAX_LATENCY_MS:
            raise Unprocessable(f"latency_ms is between 0 and {MAX_LATENCY_MS}")
        return replace(updated, down=bool(updated.down))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_PROVIDERS = (
    Provider("stripe-sim", failure_rate=0.0, latency_ms=20),
    Provider("paypal-sim", failure_rate=0.0, latency_ms=40),
)


@dataclass(frozen=True)
class Decision:
    captured: bool
    reason: str | None = None


class ProviderSimulator:
    """Asks a simulated provider to take a charge: waits its latency, then captures or declines."""

    def __init__(self, seed: str = "0", sleep: Callable[[float], None] = time.sleep) -> None:
        self.seed = seed
        self.sleep = sleep

    def charge(self, provider: Provider, idempotency_key: str) -> Decision:
        if provider.down:
            raise ProviderUnavailable(f"provider {provider.name} is down; nothing was charged",
                                      provider=provider.name)
        self.sleep(provider.latency_ms / 1000)
        draw = random.Random(f"{self.seed}:{provider.name}:{idempotency_key}").random()
        if draw < provider.failure_rate:
            return Decision(False, f"declined by {provider.name}")
        return Decision(True)


def charge_id(idempotency_key: str) -> str:
    """The payment id of the charge made with this key: one key, one payment, by construction."""
    return "pay_" + hashlib.sha256(f"charge:{idempotency_key}".encode()).hexdigest()[:12]


def fingerprint(body: Mapping[str, Any]) -> str:
    """What a repeat must match to count as the same request."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_may_charge(user: Claims, user_id: str) -> None:
    """A customer pays for themselves; services (admin tokens) charge for anyone."""
    if not user.has_role("admin") and user.subject != user_id:
        raise Forbidden("you can only pay for yourself")


def visible_to(payment: Mapping[str, Any] | None, user: Claims) -> Mapping[str, Any]:
    """The payment if the caller may see it; 404 otherwise (not 403: ids do not leak)."""
    if payment is None or not (user.has_role("admin") or payment["user_id"] == user.subject):
        raise NotFound("no such payment")
    return payment


def new_payment(key: str, body: Mapping[str, Any], provider: str, decision: Decision,
                now: datetime) -> dict[str, Any]:
    """The stored charge, captured or failed, under the id its key gives it."""
    return {"_id": charge_id(key), "order_id": body["order_id"], "user_id": body["user_id"],
            "amount_cents": body["amount_cents"], "provider": provider,
            "status": CAPTURED if decision.captured else FAILED, "reason": decision.reason,
            "created_at": now, "refunded_at": None, "charge_key": key,
            "charge_fingerprint": fingerprint(body)}


def check_same_charge(payment: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    if payment["charge_fingerprint"] != fingerprint(body):
        raise IdempotencyKeyReused("this Idempotency-Key was used for a different charge")


def check_refundable(payment: Mapping[str, Any]) -> None:
    if payment["status"] != CAPTURED:
        raise NotRefundable(f"only a captured payment can be refunded; this one is {payment['status']}",
                       payment_id=payment["_id"], payment_status=payment["status"])

"""What payments announces, on the `payments` exchange (it consumes nothing).

- `payment.captured` — payment_id, order_id, user_id, amount_cents, provider
- `payment.failed`   — payment_id, order_id, user_id, amount_cents, provider, reason
- `payment.refunded` — payment_id, order_id, user_id, amount_cents

Each is written to the payment document's outbox in the same write as the change it announces.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from patterns.outbox import Event

EXCHANGE = "payments"


def _occurred_at() -> str:
    return datetime.now(UTC).isoformat()


def payment_charged(payment: Mapping[str, Any]) -> Event:
    """`payment.captured` or `payment.failed`, whichever the charge turned out to be."""
    payload = {"payment_id": payment["_id"], "order_id": payment["order_id"],
               "user_id": payment["user_id"], "amount_cents": payment["amount_cents"],
               "provider": payment["provider"], "occurred_at": _occurred_at()}
    if payment["status"] == "captured":
        return Event(EXCHANGE, "payment.captured", payload)
    return Event(EXCHANGE, "payment.failed", {**payload, "reason": payment["reason"]})


def payment_refunded(payment: Mapping[str, Any]) -> Event:
    return Event(EXCHANGE, "payment.refunded", {
        "payment_id": payment["_id"], "order_id": payment["order_id"],
        "user_id": payment["user_id"], "amount_cents": payment["amount_cents"],
        "occurred_at": _occurred_at()})

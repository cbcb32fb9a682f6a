"""The payments service: charges and refunds over simulated providers, each applied once per key.

    POST /api/v1/payments/charges           {order_id, user_id, amount_cents, provider?}
                                            + Idempotency-Key -> 201 payment | 402 | 503
    POST /api/v1/payments/<id>/refund       + Idempotency-Key -> 200 payment (refunded) | 409
    GET  /api/v1/payments/<id>              (admin or the payment's user)
    GET  /api/v1/payments?order_id=         (admin: all; others: their own)
    GET  /api/v1/payments/providers
    PUT  /api/v1/payments/providers/<name>  (admin) {failure_rate, latency_ms, down}

A repeated POST with the same Idempotency-Key gets the first answer again (same status, same
body) and charges nothing; the same key with a different body is a 409. A provider that is
down answers 503 and nothing is stored, so retrying the key later really tries again.

Env: PAYMENTS_SEED seeds the providers' decisions (same seed, same keys: same outcomes).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, request
from flask import Response as FlaskResponse

from patterns.api import PAGE_QUERY, BadRequest, error_document, send_stored
from patterns.auth import Claims
from patterns.clock import utc_now_ms
from patterns.service import ServiceKit
from patterns.settings import ServiceSettings
from services.payments import domain
from services.payments.domain import DEFAULT_PROVIDER, DEFAULT_PROVIDERS, MAX_LATENCY_MS
from services.payments.store import (PaymentStore, ProviderStore, Response, public,
                                     stored_response)

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 200
PROVIDER_NAMES = [provider.name for provider in DEFAULT_PROVIDERS]
ID = {"type": "string", "minLength": 1, "maxLength": 64}

CHARGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["order_id", "user_id", "amount_cents"],
    "properties": {
        "order_id": ID,
        "user_id": ID,
        "amount_cents": {"type": "integer", "minimum": 1, "maximum": 100_000_000},
        "provider": {"type": "string", "enum": PROVIDER_NAMES},
    },
}
PROVIDER_CHANGES = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "failure_rate": {"type": "number", "minimum": 0, "maximum": 1},
        "latency_ms": {"type": "integer", "minimum": 0, "maximum": MAX_LATENCY_MS},
        "down": {"type": "boolean"},
    },
}
PAYMENT = {"type": "object", "required": ["id", "order_id", "user_id", "amount_cents",
                                          "provider", "status", "created_at"]}
PROVIDER = {"type": "object", "required": ["name", "failure_rate", "latency_ms", "down"]}


def idempotency_key() -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        raise BadRequest("an Idempotency-Key header is required")
    if len(key) > MAX_KEY_LENGTH:
        raise BadRequest(f"the Idempotency-Key is at most {MAX_KEY_LENGTH} characters")
    return key


def answer(response: Response) -> FlaskResponse:
    return send_stored(*response)


def create_app(settings: ServiceSettings) -> Flask:
    kit = ServiceKit(settings, title="payments",
                     description="Charges and refunds over simulated providers, once per key.")
    payments = PaymentStore(kit.outbox("payments"))
    providers = ProviderStore(kit.collection("providers"), DEFAULT_PROVIDERS)
    simulator = domain.ProviderSimulator(seed=os.environ.get("PAYMENTS_SEED", "0"))

    def charge(body: dict[str, Any], key: str) -> Response:
        """Ask the provider, store the outcome under the key, answer as stored."""
        provider = providers.get(body.get("provider", DEFAULT_PROVIDER))
        decision = simulator.charge(provider, key)  # raises ProviderUnavailable: nothing stored
        payment = domain.new_payment(key, body, provider.name, decision, utc_now_ms())
        if decision.captured:
            response: Response = (201, public(payment))
        else:
            response = (402, error_document(domain.PaymentDeclined(
                f"the payment was declined: {decision.reason}", payment_id=payment["_id"],
                order_id=payment["order_id"])))
        if not payments.record_charge(payment, response):  # the same key, at the same moment
            return replay_charge(payments.get(payment["_id"]), body)
        log.info("charge recorded", extra={"payment_id": payment["_id"],
                                           "order_id": payment["order_id"],
                                           "status": payment["status"],
                                           "provider": provider.name})
        return response

    def replay_charge(payment: dict[str, Any], body: dict[str, Any]) -> Response:
        domain.check_same_charge(payment, body)
        log.info("charge repeated, answering as before", extra={"payment_id": payment["_id"]})
        return stored_response(payment, "charge_response")

    def refund(payment: dict[str, Any], key: str) -> Response:
        if payment.get("refund_key") == key:
            return stored_response(payment, "refund_response")
        domain.check_refundable(payment)
        if not payments.record_refund(payment, key, utc_now_ms()):
            # Changed under us: refunded by a concurrent request, with this key or another.
            return refund(payments.get(payment["_id"]), key)
        log.info("payment refunded", extra={"payment_id": payment["_id"],
                                            "order_id": payment["order_id"]})
        return stored_response(payments.get(payment["_id"]), "refund_response")

    @kit.api.post("/api/v1/payments/charges", body=CHARGE, auth=True, status=201,
                  summary="Charge an order (Idempotency-Key required)", response=PAYMENT,
                  errors=(402, 409, 503))
    def create_charge(body: dict[str, Any], user: Claims):
        domain.check_may_charge(user, body["user_id"])
        key = idempotency_key()
        existing = payments.get(domain.charge_id(key))
        return answer(replay_charge(existing, body) if existing else charge(body, key))

    @kit.api.post("/api/v1/payments/<payment_id>/refund", auth=True,
                  summary="Refund a captured payment in full (Idempotency-Key required)",
                  response=PAYMENT, errors=(409,))
    def refund_payment(payment_id: str, user: Claims):
        key = idempotency_key()
        payment = domain.visible_to(payments.get(payment_id), user)
        return answer(refund(dict(payment), key))

    @kit.api.get("/api/v1/payments/providers", summary="The simulated providers' settings",
                 response={"type": "object", "required": ["items"]})
    def list_providers():
        return {"items": [provider.as_dict() for provider in providers.all()]}

    @kit.api.put("/api/v1/payments/providers/<name>", body=PROVIDER_CHANGES, auth="admin",
                 summary="Make a provider slow, flaky or down", response=PROVIDER)
    def change_provider(name: str, body: dict[str, Any], user: Claims):
        provider = providers.get(name).with_changes(body)
        providers.save(provider)
        log.warning("provider settings changed", extra={"provider": name, "by": user.subject,
                                                        **body})
        return provider.as_dict()

    @kit.api.get("/api/v1/payments/<payment_id>", auth=True, summary="One payment",
                 response=PAYMENT)
    def get_payment(payment_id: str, user: Claims):
        return public(domain.visible_to(payments.get(payment_id), user))

    @kit.api.get("/api/v1/payments", auth=True, query={"order_id": ID, **PAGE_QUERY},
                 summary="Payments, newest first (admin: all; others: their own)",
                 response={"type": "object", "required": ["items", "page", "limit", "total"]})
    def list_payments(query: dict[str, Any], user: Claims):
        criteria = {} if user.has_role("admin") else {"user_id": user.subject}
        if "order_id" in query:
            criteria["order_id"] = query["order_id"]
        items, total = payments.search(criteria, query["page"], query["limit"])
        return {"items": items, "page": query["page"], "limit": query["limit"], "total": total}

    kit.start()
    return kit.app

"""A client's retry of `POST /api/orders` with its Idempotency-Key places no second order, through
the gateway of the whole sandbox."""

from __future__ import annotations

import pytest
import requests

from microlab.launcher import SandboxProcess, admin_session
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def test_a_retried_order_with_the_same_key_is_one_order_and_one_charge(
        sandbox: SandboxProcess) -> None:
    gateway = sandbox.urls["gateway"]
    admin = admin_session(gateway)
    product = requests.get(f"{gateway}/api/products", params={"limit": 1}, timeout=10
                           ).json()["items"][0]
    order = {"items": [{"product_id": product["id"], "quantity": 1}]}
    # A test before this one may have left orders' breaker for payments open: wait it out.
    wait_for(lambda: admin.post(f"{gateway}/api/orders", json=order, timeout=30
                                ).status_code == 201, 30, "orders confirmed again")
    before = admin.get(f"{gateway}/api/inventory/{product['id']}", timeout=10).json()
    headers = {"Idempotency-Key": "retry-me-once"}
    first = admin.post(f"{gateway}/api/orders", json=order, headers=headers, timeout=30)
    again = admin.post(f"{gateway}/api/orders", json=order, headers=headers, timeout=30)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    charges = admin.get(f"{gateway}/api/payments", params={"order_id": first.json()["id"]},
                        timeout=10).json()["items"]
    assert [charge["status"] for charge in charges] == ["captured"]
    after = admin.get(f"{gateway}/api/inventory/{product['id']}", timeout=10).json()
    assert after["sold"] == before["sold"] + 1
    other = admin.post(f"{gateway}/api/orders", json={"items": [
        {"product_id": product["id"], "quantity": 2}]}, headers=headers, timeout=30)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"

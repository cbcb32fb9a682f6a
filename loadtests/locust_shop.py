"""Locust users that shop through the gateway: sign up once, then place orders back to back.

Run by the breaker and saga scenarios as `locust -f loadtests/locust_shop.py --host GATEWAY`
in a subprocess of its own (importing locust patches the process with gevent). Every order is
one request named `POST /api/orders`, so its row in the CSVs is the order latency:

- 201 is a success (the saga confirmed the order);
- 402, 409, 502 and 503 are failures named `compensated <status> <reason>` (the saga undid its
  steps and said why) — failures.csv counts each kind;
- anything else (500, a timeout, a dropped connection) is `unexpected <status>`.

Each order carries an Idempotency-Key; when its answer is lost (no answer, 502, 504) the
shopper asks again with the same key, as a careful client does — orders answers a repeat as it
answered the first, so no order is placed or charged twice. Retries are their own row,
`POST /api/orders (retry, same key)`.

Env: SHOP_MAX_QUANTITY (1) — each order is 1..N units of one random catalogue product.
"""

from __future__ import annotations

import os
import random
import time
import uuid

from locust import HttpUser, constant, task

from loadtests.names import ORDERS
from microlab.lab import ORDER_ATTEMPTS, answer_was_lost, error_code

COMPENSATED = frozenset({402, 409, 502, 503})
MAX_QUANTITY = int(os.environ.get("SHOP_MAX_QUANTITY", "1"))


class Shopper(HttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        email = f"load-{uuid.uuid4().hex[:10]}@example.com"
        password = "load-test-password"
        self.client.post("/api/users/register", name="setup: register",
                         json={"email": email, "password": password, "name": "Load"})
        login = self.client.post("/api/users/login", name="setup: login",
                                 json={"email": email, "password": password})
        self.client.headers["Authorization"] = f"Bearer {login.json()['token']}"
        catalogue = self.client.get("/api/products?limit=100", name="setup: products").json()
        self.product_ids = [product["id"] for product in catalogue["items"]]

    @task
    def place_order(self) -> None:
        item = {"product_id": random.choice(self.product_ids),
                "quantity": random.randint(1, MAX_QUANTITY)}
        headers = {"Idempotency-Key": f"load-{uuid.uuid4().hex}"}
        for attempt in range(1, ORDER_ATTEMPTS + 1):
            name = ORDERS if attempt == 1 else f"{ORDERS} (retry, same key)"
            with self.client.post("/api/orders", json={"items": [item]}, headers=headers,
                                  name=name, catch_response=True, timeout=60) as response:
                lost = answer_was_lost(response.status_code, error_code(response))
                if response.status_code == 201:
                    response.success()
                elif response.status_code in COMPENSATED and not lost:
                    response.failure(f"compensated {response.status_code} {_reason(response)}")
                else:
                    response.failure(f"unexpected {response.status_code}")
            if not lost:
                return
            time.sleep(0.5 * attempt)  # as microlab.lab.place_order (gevent makes it yield)


def _reason(response) -> str:
    try:
        return str(response.json()["error"].get("reason") or response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return "unknown"

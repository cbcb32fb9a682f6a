"""`microlab check` on the whole sandbox: the invariants hold after real orders (whatever the
session's other tests did before), and damage done on purpose in a service's database or on the
broker is found and named — then undone, so the tests after these see a clean system.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import pika
import pytest
import requests
from pymongo import MongoClient

from microlab import checker
from microlab.launcher import SandboxProcess

ADMIN = {"email": "admin@microlab.local", "password": "admin-password"}  # dev-mode defaults


@pytest.fixture(scope="module")
def admin_headers(sandbox: SandboxProcess) -> dict[str, str]:
    login = requests.post(f"{sandbox.urls['gateway']}/api/users/login", json=ADMIN, timeout=10)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['token']}"}


@pytest.fixture(scope="module")
def mongo(sandbox: SandboxProcess) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(sandbox.urls["mongo"], serverSelectionTimeoutMS=5000)
    yield client
    client.close()


def run_check(sandbox: SandboxProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return sandbox.cli("check", *args)


def violated_ids(sandbox: SandboxProcess) -> dict[str, list[list[str]]]:
    """Each broken invariant and the ids it names, from `microlab check --json` (exit 1)."""
    result = run_check(sandbox, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    return {entry["name"]: [violation["ids"] for violation in entry["violations"]]
            for entry in report["invariants"] if not entry["ok"]}


def assert_clean(sandbox: SandboxProcess) -> None:
    result = run_check(sandbox)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("✓ all 9 invariants hold over")


def place_order(sandbox: SandboxProcess, headers: dict[str, str], product_id: str
                ) -> requests.Response:
    return requests.post(f"{sandbox.urls['gateway']}/api/orders", headers=headers, timeout=30,
                         json={"items": [{"product_id": product_id, "quantity": 1}]})


def place_confirmed_order(sandbox: SandboxProcess, headers: dict[str, str], product_id: str
                          ) -> dict:
    deadline = time.monotonic() + 20  # a breaker left open by an earlier test retries after 3 s
    while (confirmed := place_order(sandbox, headers, product_id)).status_code != 201:
        assert time.monotonic() < deadline, confirmed.text
        time.sleep(1)
    return confirmed.json()


def chaos(sandbox: SandboxProcess, *args: str) -> None:
    result = subprocess.run(sandbox.command("chaos", *args), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_invariants_hold_after_a_confirmed_and_a_compensated_order(sandbox, admin_headers,
                                                                      mongo):
    product_id = mongo.inventory.stock.find_one({"available": {"$gte": 20}})["_id"]
    place_confirmed_order(sandbox, admin_headers, product_id)
    chaos(sandbox, "down", "orders:payments")
    try:
        compensated = place_order(sandbox, admin_headers, product_id)
    finally:
        chaos(sandbox, "reset")
    assert compensated.status_code == 503, compensated.text
    assert mongo.orders.orders.find_one({"_id": compensated.json()["error"]["order_id"]}
                                        )["status"] == "cancelled"

    assert_clean(sandbox)


def test_cancelling_a_confirmed_order_puts_its_stock_back_on_sale_once(sandbox, admin_headers,
                                                                       mongo):
    gateway = sandbox.urls["gateway"]
    product_id = mongo.inventory.stock.find_one({"available": {"$gte": 20}})["_id"]

    def counters() -> tuple[int, int, int]:
        stock = requests.get(f"{gateway}/api/inventory/{product_id}", headers=admin_headers,
                             timeout=10).json()
        return stock["available"], stock["reserved"], stock["sold"]

    before = counters()
    order = place_confirmed_order(sandbox, admin_headers, product_id)
    assert counters() == (before[0] - 1, before[1], before[2] + 1)

    cancel = f"{gateway}/api/orders/{order['id']}/cancel"
    cancelled = requests.post(cancel, headers=admin_headers, timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", \
        cancelled.text
    assert requests.post(cancel, headers=admin_headers, timeout=30).status_code == 409
    assert counters() == before
    # Inventory's side of the same promise: the saga's key repeats its answer, another is refused.
    reservation = mongo.inventory.reservations.find_one({"_id": order["reservation_id"]})
    assert reservation["status"] == "returned", reservation
    returned = f"{gateway}/api/inventory/reservations/{order['reservation_id']}/return"
    for key, status in ((reservation["return_key"], 200), ("another-key", 409)):
        again = requests.post(returned, timeout=10,
                              headers={**admin_headers, "Idempotency-Key": key})
        assert again.status_code == status, again.text
    assert counters() == before
    assert_clean(sandbox)


@dataclass(frozen=True)
class Damage:
    """One invariant broken on purpose: what to do, how to undo it, what check must name."""

    do: Callable[[], None]
    undo: Callable[[], None]
    invariant: str
    ids: list[str]


def one_unit_too_many(mongo: MongoClient, counter: str, invariant: str) -> Damage:
    product_id = mongo.inventory.stock.find_one({}, {"_id": 1})["_id"]
    stock = mongo.inventory.stock
    return Damage(lambda: stock.update_one({"_id": product_id}, {"$inc": {counter: 1}}),
                  lambda: stock.update_one({"_id": product_id}, {"$inc": {counter: -1}}),
                  invariant, [product_id])


def reserved_one_unit_too_many(sandbox: SandboxProcess, mongo: MongoClient) -> Damage:
    return one_unit_too_many(mongo, "reserved", checker.RESERVED_MATCHES)


def sold_one_unit_too_many(sandbox: SandboxProcess, mongo: MongoClient) -> Damage:
    return one_unit_too_many(mongo, "sold", checker.SOLD_MATCHES)


def charged_without_an_order(sandbox: SandboxProcess, mongo: MongoClient) -> Damage:
    payment_id, order_id = f"pay_{uuid.uuid4().hex[:12]}", f"ord_{uuid.uuid4().hex[:12]}"
    payments = mongo.payments.payments
    payment = {"_id": payment_id, "order_id": order_id, "user_id": "usr_nobody",
               "amount_cents": 1234, "provider": "stripe-sim", "status": "captured",
               "reason": None, "created_at": datetime.now(timezone.utc), "refunded_at": None}
    return Damage(lambda: payments.insert_one(payment),
                  lambda: payments.delete_one({"_id": payment_id}),
                  checker.CHARGES_MATCH_ORDERS, [payment_id, order_id])


def a_dead_lettered_event(sandbox: SandboxProcess, mongo: MongoClient) -> Damage:
    queue = checker.parking_queues(sandbox.state["namespace"])[0]  # <ns>.email.events.dead
    parameters = pika.URLParameters(sandbox.state["amqp_url"])

    def park() -> None:
        with pika.BlockingConnection(parameters) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish("", queue, b'{"broken": true}')

    def purge() -> None:
        with pika.BlockingConnection(parameters) as connection:
            connection.channel().queue_purge(queue)

    return Damage(park, purge, checker.NO_PARKED_EVENTS, [queue])


@pytest.mark.parametrize("make_damage", [reserved_one_unit_too_many, sold_one_unit_too_many,
                                         charged_without_an_order, a_dead_lettered_event])
def test_check_names_what_was_broken_and_is_clean_once_it_is_undone(sandbox, mongo,
                                                                      make_damage):
    damage = make_damage(sandbox, mongo)
    damage.do()
    try:
        found = violated_ids(sandbox)
    finally:
        damage.undo()
    assert damage.ids in found[damage.invariant], found
    assert_clean(sandbox)


def test_without_rabbitmqctl_parked_events_are_counted_by_passive_declares(
        sandbox, monkeypatch):
    namespace, amqp_url = sandbox.state["namespace"], sandbox.state["amqp_url"]
    listed = checker.parked_message_counts(amqp_url, namespace)
    monkeypatch.setattr(checker.shutil, "which", lambda name: None)
    declared = checker.parked_message_counts(amqp_url, namespace)
    assert declared == listed
    assert f"{namespace}.users.unrouted" in declared

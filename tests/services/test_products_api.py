"""The products service in-process, on the embedded MongoDB and the real RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from patterns.bus import Bus
from services.products.app import create_app
from services.products.domain import DEMO_CATALOGUE
from tests.helpers import EventRecorder


@pytest.fixture
def product_events(amqp_url: str, bus_namespace: str) -> Iterator[EventRecorder]:
    recorder = EventRecorder()
    bus = Bus(amqp_url, namespace=bus_namespace)
    queue = f"test.products.{uuid.uuid4().hex[:8]}"
    with bus.consumer(queue, recorder, ("products", "product.*")):
        yield recorder
    bus.close()


@pytest.fixture
def app(make_settings, build_app, product_events):
    return build_app(create_app, make_settings("products"))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin(app) -> dict[str, str]:
    token = app.extensions["kit"].tokens.issue("usr_admin", roles=["customer", "admin"])
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def customer(app) -> dict[str, str]:
    token = app.extensions["kit"].tokens.issue("usr_ann", roles=["customer"])
    return {"Authorization": f"Bearer {token}"}


def create(client, admin, **fields) -> dict:
    body = {"name": "Teapot", "description": "Cast iron, 1 litre", "category": "kitchen",
            "price_cents": 2500, **fields}
    response = client.post("/api/v1/products", json=body, headers=admin)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_an_empty_catalogue_is_seeded_and_each_demo_product_announced_with_stock(
        client, product_events):
    page = client.get("/api/v1/products?limit=100").get_json()
    assert page["total"] == len(DEMO_CATALOGUE)
    assert {item["id"] for item in page["items"]} == {demo.id for demo in DEMO_CATALOGUE}
    seeded = {demo.id: demo for demo in DEMO_CATALOGUE}
    announced = product_events.wait_for(
        lambda m: m.routing_key == "product.created" and m.body["product_id"] in seeded,
        count=len(DEMO_CATALOGUE))
    for message in announced:
        assert message.body["initial_stock"] == seeded[message.body["product_id"]].initial_stock


def test_a_second_start_on_the_same_database_does_not_seed_again(
        make_settings, build_app):
    settings = make_settings("products")
    build_app(create_app, settings)
    again = build_app(create_app, settings).test_client()
    assert again.get("/api/v1/products").get_json()["total"] == len(DEMO_CATALOGUE)


def test_an_admin_creates_a_product_and_product_created_goes_out(client, admin, product_events):
    product = create(client, admin)
    assert product["id"].startswith("prd_") and product["active"] is True
    assert client.get(f"/api/v1/products/{product['id']}").get_json() == product
    [event] = product_events.wait_for(
        lambda m: m.routing_key == "product.created" and m.body["product_id"] == product["id"])
    assert event.body == {"product_id": product["id"], "name": "Teapot", "price_cents": 2500,
                          "category": "kitchen", "occurred_at": product["created_at"]}


def test_only_an_admin_may_create(client, customer):
    body = {"name": "Teapot", "category": "kitchen", "price_cents": 2500}
    assert client.post("/api/v1/products", json=body).status_code == 401
    assert client.post("/api/v1/products", json=body, headers=customer).status_code == 403


@pytest.mark.parametrize("change, field", [
    ({"price_cents": 0}, "price_cents"),
    ({"price_cents": 12.5}, "price_cents"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 121}, "name"),
    ({"category": "Kitchen Stuff"}, "category"),
    ({"description": "x" * 2001}, "description"),
    ({"colour": "red"}, ""),
    ({"name": "Pot \ud800"}, "name"),
])
def test_invalid_fields_are_a_400_naming_the_field(client, admin, change, field):
    body = {"name": "Teapot", "category": "kitchen", "price_cents": 2500, **change}
    response = client.post("/api/v1/products", json=body, headers=admin)
    assert response.status_code == 400
    assert field in [problem["field"] for problem in response.get_json()["error"]["fields"]]


def test_search_ignores_case_looks_in_descriptions_and_treats_input_as_text(client, admin):
    tag = uuid.uuid4().hex[:8]
    teapot = create(client, admin, name=f"Teapot {tag}", description="Cast iron (1.5 l)")
    kettle = create(client, admin, name=f"Kettle {tag}", description="STEEL, whistles")

    def found(**query) -> list[str]:
        response = client.get("/api/v1/products", query_string=query)
        assert response.status_code == 200, response.get_json()
        return [item["id"] for item in response.get_json()["items"]]

    assert set(found(q=tag.upper())) == {teapot["id"], kettle["id"]}
    assert found(q="steel") == [kettle["id"]]
    assert found(q="(1.5 l)") == [teapot["id"]]
    assert found(q="1.5 l)") == [teapot["id"]]  # unbalanced: still plain text
    assert found(q=".*") == []


def test_filters_combine_and_pages_report_the_total(client, admin):
    category = f"cat-{uuid.uuid4().hex[:8]}"
    prices = [100, 250, 400, 550, 700]
    ids = {price: create(client, admin, category=category, price_cents=price)["id"]
           for price in prices}
    in_range = client.get("/api/v1/products", query_string={
        "category": category, "min_price": 250, "max_price": 550}).get_json()
    assert {item["id"] for item in in_range["items"]} == {ids[250], ids[400], ids[550]}
    assert in_range["total"] == 3
    second = client.get("/api/v1/products", query_string={
        "category": category, "page": 2, "limit": 2}).get_json()
    assert (second["page"], second["limit"], second["total"]) == (2, 2, 5)
    assert [item["id"] for item in second["items"]] == [ids[400], ids[250]]  # newest first


@pytest.mark.parametrize("query", [{"min_price": 500, "max_price": 100}, {"limit": 101},
                                   {"page": 0}, {"min_price": "cheap"}, {"q": "x" * 101}])
def test_bad_queries_are_a_400(client, query):
    response = client.get("/api/v1/products", query_string=query)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_request"


def test_an_unknown_product_is_a_404(client):
    response = client.get("/api/v1/products/prd_000000000000")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_a_partial_update_changes_only_what_it_names_and_announces_it(
        client, admin, product_events):
    product = create(client, admin)
    response = client.patch(f"/api/v1/products/{product['id']}",
                            json={"price_cents": 1999, "name": "Teapot"}, headers=admin)
    assert response.status_code == 200
    updated = response.get_json()
    assert updated["price_cents"] == 1999 and updated["description"] == product["description"]
    [event] = product_events.wait_for(
        lambda m: m.routing_key == "product.updated" and m.body["product_id"] == product["id"])
    assert event.body == {"product_id": product["id"], "price_cents": 1999,
                          "changed": ["price_cents"], "occurred_at": updated["updated_at"]}


def test_a_deactivated_product_leaves_the_list_but_can_still_be_read(client, admin):
    product = create(client, admin, category=f"cat-{uuid.uuid4().hex[:8]}")
    off = client.patch(f"/api/v1/products/{product['id']}", json={"active": False},
                       headers=admin).get_json()
    assert off["active"] is False
    assert client.get(f"/api/v1/products/{product['id']}").get_json()["active"] is False
    listed = client.get("/api/v1/products", query_string={"category": product["category"]})
    assert listed.get_json()["total"] == 0
    inactive = client.get("/api/v1/products", query_string={
        "category": product["category"], "active": "false"}).get_json()
    assert [item["id"] for item in inactive["items"]] == [product["id"]]
    assert inactive["items"][0]["active"] is False


def test_updates_need_an_admin_a_known_product_and_at_least_one_valid_field(
        client, admin, customer):
    product = create(client, admin)
    path = f"/api/v1/products/{product['id']}"
    assert client.patch(path, json={"price_cents": 1}, headers=customer).status_code == 403
    assert client.patch(path, json={}, headers=admin).status_code == 400
    assert client.patch(path, json={"price_cents": -5}, headers=admin).status_code == 400
    assert client.patch(path, json={"id": "prd_x"}, headers=admin).status_code == 400
    assert client.patch("/api/v1/products/prd_nope", json={"price_cents": 5},
                        headers=admin).status_code == 404

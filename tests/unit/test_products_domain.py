"""The catalogue's rules, without a database: products, partial updates, search, the demo seed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from patterns.api import BadRequest
from services.products.domain import (DEMO_CATALOGUE, CatalogueQuery, iso, new_product,
                                      new_product_id, revise)
from services.products.events import product_created, product_updated

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def mug(**fields):
    return new_product({"name": "Mug", "category": "home", "price_cents": 1200, **fields},
                       now=NOW, product_id="prd_000000000001")


def test_a_new_product_is_active_with_trimmed_text_and_both_timestamps_now():
    product = mug(name="  Blue Mug ", description=" 350 ml ")
    assert product.public_view() == {
        "id": "prd_000000000001", "name": "Blue Mug", "description": "350 ml",
        "category": "home", "price_cents": 1200, "active": True,
        "created_at": "2026-11-25T09:30:00.000Z", "updated_at": "2026-11-25T09:30:00.000Z"}


def test_product_ids_carry_the_prefix_and_twelve_hex_characters():
    product_id = new_product_id()
    assert product_id.startswith("prd_") and len(product_id) == 16
    int(product_id[4:], 16)


def test_text_a_database_cannot_store_is_a_bad_request_not_a_crash():
    with pytest.raises(BadRequest) as refused:
        mug(name="Mug \ud800")
    assert refused.value.details["fields"][0]["field"] == "name"


def test_revise_reports_only_the_fields_whose_value_changed():
    product = mug()
    revised, changes = revise(product, {"price_cents": 999, "category": "home"}, now=LATER)
    assert changes == {"price_cents": 999}
    assert revised.price_cents == 999 and revised.updated_at == LATER
    assert revised.created_at == NOW


def test_revise_without_a_real_change_keeps_the_product_as_it_was():
    product = mug()
    revised, changes = revise(product, {"name": " Mug ", "active": True}, now=LATER)
    assert changes == {} and revised is product


def test_min_price_above_max_price_is_refused():
    with pytest.raises(BadRequest, match="min_price"):
        CatalogueQuery(min_price=500, max_price=100)
    assert CatalogueQuery(min_price=100, max_price=100).skip == 0


def test_pages_skip_whole_pages():
    assert CatalogueQuery(page=3, limit=20).skip == 40


def test_iso_treats_a_naive_datetime_from_mongodb_as_utc():
    assert iso(datetime(2026, 1, 2, 3, 4, 5, 6000)) == "2026-01-02T03:04:05.006Z"


def test_demo_catalogue_spans_three_categories_with_fixed_ids_and_some_stock():
    assert 8 <= len(DEMO_CATALOGUE) <= 12
    assert len({demo.category for demo in DEMO_CATALOGUE}) == 3
    assert len({demo.id for demo in DEMO_CATALOGUE}) == len(DEMO_CATALOGUE)
    assert all(demo.initial_stock > 0 and demo.price_cents > 0 for demo in DEMO_CATALOGUE)
    assert DEMO_CATALOGUE[0].id == DEMO_CATALOGUE[0].to_product(NOW).id


def test_product_created_carries_initial_stock_only_when_given():
    product = mug()
    plain = product_created(product)
    assert (plain.exchange, plain.routing_key) == ("products", "product.created")
    assert plain.payload == {"product_id": product.id, "name": "Mug", "price_cents": 1200,
                             "category": "home", "occurred_at": "2026-11-25T09:30:00.000Z"}
    assert product_created(product, initial_stock=7).payload["initial_stock"] == 7


def test_product_updated_names_the_changed_fields_with_their_new_values():
    revised, changes = revise(mug(), {"price_cents": 999, "active": False}, now=LATER)
    event = product_updated(revised, changes)
    assert event.routing_key == "product.updated"
    assert event.payload == {"product_id": revised.id, "price_cents": 999, "active": False,
                             "changed": ["active", "price_cents"],
                             "occurred_at": "2026-11-25T09:35:00.000Z"}

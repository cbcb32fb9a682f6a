"""The products service: the catalogue, with search, filters and pagination.

    POST  /api/v1/products        (admin) {name, description?, category, price_cents, active?}
                                  → 201 product, and product.created
    GET   /api/v1/products        ?q= &category= &min_price= &max_price= &active= &page= &limit=
                                  → {items, page, limit, total}
    GET   /api/v1/products/<id>   → product (inactive ones too: a caller checks `active`)
    PATCH /api/v1/products/<id>   (admin) any of the editable fields
                                  → product, and product.updated naming what changed

`q` looks in name and description, ignoring case; prices are integer cents, both bounds
inclusive; the list shows active products unless `active=false` asks for the others; newest
first. A product is never deleted: an admin sets `active` to false.

At start, an empty catalogue is filled with a small demo catalogue (`domain.DEMO_CATALOGUE`),
announced like any other product, with an `initial_stock` inventory uses as starting stock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask

from patterns.api import PAGE_QUERY, NotFound
from patterns.auth import Claims
from patterns.service import ServiceKit
from patterns.settings import ServiceSettings
from services.products import events
from services.products.domain import (CATEGORY_MAX, CATEGORY_PATTERN, DEMO_CATALOGUE,
                                      DESCRIPTION_MAX, NAME_MAX, PRICE_MAX_CENTS,
                                      PRICE_MIN_CENTS, SEARCH_MAX, CatalogueQuery, Product,
                                      new_product, new_product_id, revise)
from services.products.store import ProductStore

log = logging.getLogger(__name__)

NAME = {"type": "string", "minLength": 1, "maxLength": NAME_MAX, "pattern": r"\S"}
DESCRIPTION = {"type": "string", "maxLength": DESCRIPTION_MAX}
CATEGORY = {"type": "string", "minLength": 1, "maxLength": CATEGORY_MAX,
            "pattern": CATEGORY_PATTERN}
PRICE = {"type": "integer", "minimum": PRICE_MIN_CENTS, "maximum": PRICE_MAX_CENTS}
ACTIVE = {"type": "boolean"}

NEW_PRODUCT = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "category", "price_cents"],
    "properties": {"name": NAME, "description": DESCRIPTION, "category": CATEGORY,
                   "price_cents": PRICE, "active": ACTIVE},
}
PRODUCT_CHANGE = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {"name": NAME, "description": DESCRIPTION, "category": CATEGORY,
                   "price_cents": PRICE, "active": ACTIVE},
}
CATALOGUE_QUERY = {
    "q": {"type": "string", "minLength": 1, "maxLength": SEARCH_MAX},
    "category": {"type": "string", "minLength": 1, "maxLength": CATEGORY_MAX},
    "min_price": {"type": "integer", "minimum": 0, "maximum": PRICE_MAX_CENTS},
    "max_price": {"type": "integer", "minimum": 0, "maximum": PRICE_MAX_CENTS},
    "active": {"type": "boolean", "default": True},
    **PAGE_QUERY,
}
PRODUCT = {
    "type": "object",
    "required": ["id", "name", "description", "category", "price_cents", "active",
                 "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "description": {"type": "string"}, "category": {"type": "string"},
        "price_cents": {"type": "integer"}, "active": {"type": "boolean"},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
    },
}
PRODUCT_PAGE = {
    "type": "object", "required": ["items", "page", "limit", "total"],
    "properties": {"items": {"type": "array", "items": PRODUCT}, "page": {"type": "integer"},
                   "limit": {"type": "integer"}, "total": {"type": "integer"}},
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: ServiceSettings, *, now: Callable[[], datetime] = utc_now,
               new_id: Callable[[], str] = new_product_id) -> Flask:
    kit = ServiceKit(settings, title="products",
                     description="The catalogue: search, filters, pagination; admins edit it.")
    products = ProductStore(kit.outbox("products"))
    seed_demo_catalogue(products, now=now())
    api = kit.api

    @api.post("/api/v1/products", body=NEW_PRODUCT, auth="admin", status=201,
              summary="Add a product to the catalogue", response=PRODUCT)
    def create_product(body: dict, user: Claims) -> dict:
        product = new_product(body, now=now(), product_id=new_id())
        products.add(product, events.product_created(product))
        log.info("product created", extra={"product_id": product.id, "by": user.subject})
        return product.public_view()

    @api.get("/api/v1/products", query=CATALOGUE_QUERY,
             summary="Search the catalogue, one page at a time", response=PRODUCT_PAGE)
    def list_products(query: dict) -> dict:
        search = CatalogueQuery(text=query.get("q"), category=query.get("category"),
                                min_price=query.get("min_price"),
                                max_price=query.get("max_price"), active=query["active"],
                                page=query["page"], limit=query["limit"])
        found, total = products.search(search)
        return {"items": [product.public_view() for product in found],
                "page": search.page, "limit": search.limit, "total": total}

    @api.get("/api/v1/products/<product_id>", summary="One product", response=PRODUCT)
    def get_product(product_id: str) -> dict:
        return find_or_404(products, product_id).public_view()

    @api.patch("/api/v1/products/<product_id>", body=PRODUCT_CHANGE, auth="admin",
               summary="Change some of a product's fields", response=PRODUCT)
    def update_product(product_id: str, body: dict, user: Claims) -> dict:
        product, changes = revise(find_or_404(products, product_id), body, now=now())
        if changes:
            products.save_changes(product, changes, events.product_updated(product, changes))
            log.info("product updated", extra={"product_id": product.id, "by": user.subject,
                                               "changed": sorted(changes)})
        return product.public_view()

    kit.start()
    return kit.app


def find_or_404(products: ProductStore, product_id: str) -> Product:
    product = products.find(product_id)
    if product is None:
        raise NotFound(f"no product {product_id}")
    return product


def seed_demo_catalogue(products: ProductStore, *, now: datetime) -> None:
    """Fill an empty catalogue with the demo products, each announced with its starting stock."""
    if not products.is_empty():
        return
    added = 0
    for demo in DEMO_CATALOGUE:
        product = demo.to_product(now)
        added += products.add(product, events.product_created(
            product, initial_stock=demo.initial_stock))
    log.info("demo catalogue seeded", extra={"products": added})

"""The products collection (pymongo): one document per product, `_id` = the product id.

The collection is also the outbox of the events that announce its changes (`patterns.outbox`).
Search follows the embedded MongoDB's rules (docs/embedded-mongodb.md): the user's text is
escaped and matched with `$regex` + `$options: "i"` (a compiled pattern would fail there), and
`active` is read back through `bool()` because a `$set` of a boolean comes back as 1 or 0, and
`updated_at` through `_moment()` because a `$set` of a datetime comes back as text there.
"""

from __future__ import annotations

import re
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from patterns.outbox import Event, Outbox
from patterns.clock import stored_time as _moment
from patterns.paging import read_page
from services.products.domain import CatalogueQuery, Product

FIELDS = ("name", "description", "category", "price_cents", "active", "created_at",
          "updated_at")
_PROJECTION = {field: 1 for field in FIELDS}  # never read the pending events back
_NEWEST_FIRST = [("created_at", DESCENDING), ("_id", ASCENDING)]


class ProductStore:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.collection = outbox.collection
        self.collection.create_index("category")
        self.collection.create_index("price_cents")
        self.collection.create_index([("created_at", DESCENDING)])

    def add(self, product: Product, *events: Event) -> bool:
        """Store a new product with its events; False if one with that id exists already."""
        try:
            self.outbox.insert(_document(product), *events)
            return True
        except DuplicateKeyError:
            return False

    def find(self, product_id: str) -> Product | None:
        return _product(self.collection.find_one({"_id": product_id}, _PROJECTION))

    def search(self, query: CatalogueQuery) -> tuple[list[Product], int]:
        """One page of matching products, newest first, and how many match in all."""
        found = read_page(self.collection, _selector(query), sort=_NEWEST_FIRST,
                          skip=query.skip, limit=query.limit, projection=_PROJECTION)
        return [_product(document) for document in found.items], found.total

    def save_changes(self, product: Product, changes: dict[str, Any], *events: Event) -> None:
        self.outbox.update({"_id": product.id},
                           {"$set": {**changes, "updated_at": product.updated_at}}, *events)

    def is_empty(self) -> bool:
        return self.collection.find_one({}, {"_id": 1}) is None


def _selector(query: CatalogueQuery) -> dict[str, Any]:
    selector: dict[str, Any] = {"active": query.active}
    if query.text:
        pattern = {"$regex": re.escape(query.text), "$options": "i"}
        selector["$or"] = [{"name": pattern}, {"description": pattern}]
    if query.category:
        selector["category"] = query.category
    price: dict[str, int] = {}
    if query.min_price is not None:
        price["$gte"] = query.min_price
    if query.max_price is not None:
        price["$lte"] = query.max_price
    if price:
        selector["price_cents"] = price
    return selector


def _document(product: Product) -> dict[str, Any]:
    return {"_id": product.id, **{field: getattr(product, field) for field in FIELDS}}


def _product(document: dict[str, Any] | None) -> Product | None:
    if document is None:
        return None
    return Product(id=document["_id"], name=document["name"],
                   description=document["description"], category=document["category"],
                   price_cents=document["price_cents"], active=bool(document["active"]),
                   created_at=_moment(document["created_at"]),
                   updated_at=_moment(document["updated_at"]))

"""The catalogue's rules: what a product is, what may change about it, how a search is asked.

No I/O here: `store.py` keeps products in MongoDB, `events.py` announces them, `app.py` wires
both to HTTP. Prices are integer cents (no floats: 0.1 + 0.2 is not 0.3, and the embedded
MongoDB cannot store Decimal128).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from patterns.api import BadRequest
from patterns.clock import iso_utc as iso

NAME_MAX = 120
DESCRIPTION_MAX = 2000
CATEGORY_MAX = 40
CATEGORY_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"  # a slug: "home-office", "books"
PRICE_MIN_CENTS = 1
PRICE_MAX_CENTS = 10_000_000  # 100,000.00: enough for a lab, and a bound the fuzzer can hit
SEARCH_MAX = 100

EDITABLE_FIELDS = ("name", "description", "category", "price_cents", "active")


def new_product_id() -> str:
    return f"prd_{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    description: str
    category: str
    price_cents: int
    active: bool
    created_at: datetime
    updated_at: datetime

    def public_view(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description,
                "category": self.category, "price_cents": self.price_cents,
                "active": self.active, "created_at": iso(self.created_at),
                "updated_at": iso(self.updated_at)}


def new_product(fields: Mapping[str, Any], *, now: datetime, product_id: str) -> Product:
    """A product from validated input (the route's schema has checked types and bounds)."""
    return Product(id=product_id, name=_text(fields["name"], "name"),
                   description=_text(fields.get("description", ""), "description"),
                   category=fields["category"], price_cents=fields["price_cents"],
                   active=fields.get("active", True), created_at=now, updated_at=now)


def revise(product: Product, patch: Mapping[str, Any], *, now: datetime
           ) -> tuple[Product, dict[str, Any]]:
    """Apply a partial update; returns the product and the fields whose value really changed
    (empty: nothing to save and nothing to announce)."""
    wanted = {name: patch[name] for name in EDITABLE_FIELDS if name in patch}
    for name in ("name", "description"):
        if name in wanted:
            wanted[name] = _text(wanted[name], name)
    changes = {name: value for name, value in wanted.items() if getattr(product, name) != value}
    if not changes:
        return product, {}
    return replace(product, **changes, updated_at=now), changes


def _text(value: str, field: str) -> str:
    """Trimmed text; refuses what JSON can carry but MongoDB cannot store (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{field} is not valid text", fields=[
            {"field": field, "message": "contains characters that are not valid Unicode"}]
        ) from None
    return value.strip()


@dataclass(frozen=True)
class CatalogueQuery:
    """One page of a catalogue search: every filter is optional and they all apply together."""

    text: str | None = None  # searched, case-insensitively, in name and description
    category: str | None = None
    min_price: int | None = None  # cents, inclusive
    max_price: int | None = None  # cents, inclusive
    active: bool = True
    page: int = 1
    limit: int = 20

    def __post_init__(self) -> None:
        if (self.min_price is not None and self.max_price is not None
                and self.min_price > self.max_price):
            raise BadRequest("min_price must not be greater than max_price", fields=[
                {"field": "min_price", "message": f"{self.min_price} > max_price "
                                                  f"{self.max_price}"}])

    @property
    def skip(self) -> int:
        return (self.page - 1) * self.limit


# -- the demo catalogue --------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoProduct:
    name: str
    description: str
    category: str
    price_cents: int
    initial_stock: int  # travels in product.created so inventory starts with some stock

    @property
    def id(self) -> str:
        """Fixed per name, so two instances seeding at once write the same products once."""
        return f"prd_{hashlib.sha256(self.name.encode()).hexdigest()[:12]}"

    def to_product(self, now: datetime) -> Product:
        return Product(id=self.id, name=self.name, description=self.description,
                       category=self.category, price_cents=self.price_cents, active=True,
                       created_at=now, updated_at=now)


DEMO_CATALOGUE: tuple[DemoProduct, ...] = (
    DemoProduct("Mechanical Keyboard", "Tenkeyless keyboard with tactile switches.",
                "electronics", 8999, 25),
    DemoProduct("Wireless Mouse", "Quiet clicks, two-month battery.", "electronics", 2999, 40),
    DemoProduct("USB-C Hub", "Seven ports, including HDMI and Ethernet.", "electronics", 4599, 15),
    DemoProduct("Noise-Cancelling Headphones", "Over-ear, thirty hours per charge.",
                "electronics", 19900, 8),
    DemoProduct("Designing Data-Intensive Applications", "Kleppmann on reliable, scalable data "
                "systems.", "books", 4200, 30),
    DemoProduct("Release It!", "Nygard on stability patterns: timeouts, circuit breakers, "
                "bulkheads.", "books", 3800, 20),
    DemoProduct("Building Microservices", "Newman on splitting a system into services.",
                "books", 4500, 12),
    DemoProduct("Ceramic Mug", "350 ml, dishwasher safe; holds a day's worth of retries.",
                "home", 1400, 60),
    DemoProduct("Desk Lamp", "Warm LED light with a dimmer.", "home", 3500, 18),
    DemoProduct("Plant Pot", "Terracotta, 15 cm, with a saucer.", "home", 1900, 5),
)

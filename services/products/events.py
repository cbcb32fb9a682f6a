"""What the products service publishes, on the `products` exchange (it consumes nothing).

    product.created   product_id, name, price_cents, category, occurred_at
                      [+ initial_stock, only for the demo catalogue seeded at start]
                                                           → inventory (stock record), notifications
    product.updated   product_id, the changed fields with their new values, changed (their
                      names), occurred_at                  → notifications

Both leave through the outbox, written in the same document write as the change they announce.
`initial_stock` lets inventory give each demo product some stock; a product created over the
API starts at 0 and an admin adjusts it (`POST /inventory/<product_id>/adjust`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from patterns.outbox import Event
from services.products.domain import Product, iso

EXCHANGE = "products"


def product_created(product: Product, *, initial_stock: int | None = None) -> Event:
    payload: dict[str, Any] = {
        "product_id": product.id, "name": product.name, "price_cents": product.price_cents,
        "category": product.category, "occurred_at": iso(product.created_at)}
    if initial_stock is not None:
        payload["initial_stock"] = initial_stock
    return Event(EXCHANGE, "product.created", payload)


def product_updated(product: Product, changes: Mapping[str, Any]) -> Event:
    return Event(EXCHANGE, "product.updated", {
        "product_id": product.id, **changes, "changed": sorted(changes),
        "occurred_at": iso(product.updated_at)})

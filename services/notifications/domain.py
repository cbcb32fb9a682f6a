"""What a notification says and who receives it: rules with no I/O.

Every event on the bus becomes one notification. Its recipient is a Socket.IO room:

- `user:<user_id>` when the event names a user (orders, payments, the user's own account);
- `admins` when it names nobody (a new product, a low-stock alert): a shared inbox that every
  admin reads, and marks read, for the whole team.

A reader sees the rooms they belong to (`rooms_of`): their own, plus `admins` for an admin.
The stored notification keeps the event's routing key as its `type` and only the event's ids
as its `data`: the ids are what a client needs to fetch the details; the rest is in the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from patterns.bus import PermanentError

ADMINS_ROOM = "admins"
MAX_TEXT = 500  # characters kept of a title or message
MAX_FACT = 120  # characters kept of one payload value quoted in a message

# routing key -> (title, message); {placeholders} are payload fields or the derived
# `amount`, `total`, `price` (formatted cents) and `product` (name, else id).
TEMPLATES: dict[str, tuple[str, str]] = {
    "user.registered": ("Welcome to Microlab",
                        "Hi {name}, your account is ready. Happy shopping!"),
    "user.password_changed": ("Your password was changed",
                              "If you did not change it, reset it now and contact support."),
    "product.created": ("New product in the catalogue",
                        "{product} is now available at {price}."),
    "product.updated": ("Product updated", "{product} has new details."),
    "stock.reserved": ("Stock reserved", "Stock is set aside for order {order_id}."),
    "stock.released": ("Stock released", "Stock held for order {order_id} is back on sale."),
    "stock.returned": ("Stock returned",
                       "Stock sold with cancelled order {order_id} is back on sale."),
    "stock.low": ("Low stock", "Only {available} left of product {product_id} "
                               "(alert threshold {threshold})."),
    "stock.reservation_failed": ("Stock reservation failed",
                                 "Order {order_id} could not be reserved: {reason}."),
    "payment.captured": ("Payment received", "We received {amount} for order {order_id}."),
    "payment.failed": ("Payment failed",
                       "Your payment of {amount} for order {order_id} failed: {reason}."),
    "payment.refunded": ("Payment refunded",
                         "{amount} for order {order_id} is on its way back to you."),
    "order.created": ("Order placed", "Your order {order_id} of {total} was placed."),
    "order.confirmed": ("Order confirmed", "Your order {order_id} of {total} is confirmed."),
    "order.cancelled": ("Order cancelled", "Your order {order_id} was cancelled: {reason}."),
    "order.status_changed": ("Order status changed",
                             "Your order {order_id} went from {from} to {to}."),
}
FALLBACK = ("Notification", "Something happened: {event}.")


class MalformedEvent(PermanentError, ValueError):
    """The event's body is not a JSON object: no notification can be made of it."""


@dataclass(frozen=True)
class Draft:
    """A notification before it is stored: who gets it and what it says."""

    recipient: str  # the Socket.IO room: user:<id> or admins
    user_id: str | None
    type: str
    title: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def rooms_of(user_id: str, *, is_admin: bool) -> list[str]:
    """The rooms a reader belongs to: whose notifications they may see and mark read."""
    return [user_room(user_id), ADMINS_ROOM] if is_admin else [user_room(user_id)]


def format_cents(cents: Any) -> str:
    """Integer cents as a price, e.g. 1999 -> '19.99' (anything else as '?')."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        return "?"
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


class _Facts(dict):
    """Payload values for a template; a field the event lacks reads as '?'."""

    def __missing__(self, key: str) -> str:
        return "?"


def _fact(value: Any) -> str:
    return str(value)[:MAX_FACT]


def notification_for(routing_key: str, payload: Any) -> Draft:
    """The notification an event makes: recipient, type, title, message and the event's ids."""
    if not isinstance(payload, Mapping):
        raise MalformedEvent(f"{routing_key}: the body is a {type(payload).__name__}, "
                             "not a JSON object")
    user_id = payload.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        user_id = None
    facts = _Facts({key: _fact(value) for key, value in payload.items()})
    facts.update(amount=format_cents(payload.get("amount_cents")),
                 total=format_cents(payload.get("total_cents")),
                 price=format_cents(payload.get("price_cents")),
                 product=_fact(payload.get("name") or payload.get("product_id") or "a product"),
                 event=routing_key)
    title, message = TEMPLATES.get(routing_key, FALLBACK)
    return Draft(
        recipient=user_room(user_id) if user_id else ADMINS_ROOM,
        user_id=user_id,
        type=routing_key,
        title=title.format_map(facts)[:MAX_TEXT],
        message=message.format_map(facts)[:MAX_TEXT],
        data=ids_of(payload),
    )


def ids_of(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The event's ids (`*_id` fields holding a string or a number)."""
    return {key: value[:MAX_FACT] if isinstance(value, str) else value
            for key, value in payload.items()
            if isinstance(key, str) and key.endswith("_id")
            and isinstance(value, (str, int)) and not isinstance(value, bool)}

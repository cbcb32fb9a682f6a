"""The email domain: which events become which emails, what they say, and who may read them.

No I/O here. An email is composed from an event's payload and its recipient; where the
recipient's address comes from (the payload, or the users service) is the handler's concern.

    user.registered        → welcome                 (address in the payload)
    user.password_changed  → security notice         (address in the payload)
    order.confirmed        → receipt                 (user_id only: address from users)
    order.cancelled        → cancellation notice     (user_id only)
    payment.refunded       → refund notice           (user_id only)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from patterns.api import Forbidden
from patterns.bus import PermanentError
from patterns.auth import Claims
from patterns.clock import iso_utc as iso

ADMIN = "admin"
SHOP = "Microlab Shop"
RELATED_IDS = ("user_id", "order_id", "payment_id")


class MalformedEvent(PermanentError, ValueError):
    """The event lacks a fact its email needs; retrying will not add it."""


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str | None = None

    @property
    def greeting(self) -> str:
        return f"Hello {self.name}," if self.name else "Hello,"


@dataclass(frozen=True)
class Draft:
    subject: str
    body: str


@dataclass(frozen=True)
class Email:
    """One email "sent": stored, never handed to SMTP in this lab."""

    id: str
    to: str
    subject: str
    body: str
    event_type: str
    message_id: str  # the event's message id: one email per event, however often delivered
    created_at: datetime
    related: Mapping[str, str] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "to": self.to, "subject": self.subject, "body": self.body,
                "event_type": self.event_type, "message_id": self.message_id,
                "related": dict(self.related), "created_at": iso(self.created_at)}


def normalise_address(raw: str) -> str:
    return raw.strip().lower()


# -- composing ------------------------------------------------------------------------------

def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"the event has no {key}")
    return value


def _cents(payload: Mapping[str, Any], key: str) -> int:
    value = payload.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedEvent(f"the event has no valid {key}")
    return value


def money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def welcome(payload: Mapping[str, Any], to: Recipient) -> Draft:
    return Draft(f"Welcome to {SHOP}", (
        f"{to.greeting}\n\n"
        f"Your {SHOP} account is ready. Sign in with {to.email} to browse the catalogue and "
        f"place your first order.\n"))


def password_notice(payload: Mapping[str, Any], to: Recipient) -> Draft:
    return Draft("Your password was changed", (
        f"{to.greeting}\n\n"
        f"The password of your {SHOP} account ({to.email}) was changed at "
        f"{payload.get('occurred_at') or 'an unknown time'}.\n"
        f"If you did not do this, contact support now: someone else may know your password.\n"))


def receipt(payload: Mapping[str, Any], to: Recipient) -> Draft:
    order_id, total = _text(payload, "order_id"), _cents(payload, "total_cents")
    return Draft(f"Receipt for order {order_id}", (
        f"{to.greeting}\n\n"
        f"Thank you: order {order_id} is confirmed and paid.\n"
        f"Total charged: {money(total)}.\n"))


def cancellation(payload: Mapping[str, Any], to: Recipient) -> Draft:
    order_id = _text(payload, "order_id")
    reason = payload.get("reason") or "no reason given"
    return Draft(f"Order {order_id} was cancelled", (
        f"{to.greeting}\n\n"
        f"Order {order_id} was cancelled ({reason}).\n"
        f"Any amount charged for it is refunded; a separate email confirms the refund.\n"))


def refund_notice(payload: Mapping[str, Any], to: Recipient) -> Draft:
    order_id, amount = _text(payload, "order_id"), _cents(payload, "amount_cents")
    return Draft(f"Refund of {money(amount)} for order {order_id}", (
        f"{to.greeting}\n\n"
        f"We refunded {money(amount)} for order {order_id} "
        f"(payment {payload.get('payment_id') or 'unknown'}).\n"
        f"Depending on your bank it can take a few days to show.\n"))


TEMPLATES: dict[str, Callable[[Mapping[str, Any], Recipient], Draft]] = {
    "user.registered": welcome,
    "user.password_changed": password_notice,
    "order.confirmed": receipt,
    "order.cancelled": cancellation,
    "payment.refunded": refund_notice,
}


def recipient_in(payload: Mapping[str, Any]) -> Recipient | None:
    """The recipient named by the event itself, if it carries an address."""
    email = payload.get("email")
    if not isinstance(email, str) or "@" not in email:
        return None
    name = payload.get("name")
    return Recipient(normalise_address(email), name if isinstance(name, str) else None)


def user_id_of(payload: Mapping[str, Any]) -> str:
    return _text(payload, "user_id")


def compose(event_type: str, payload: Mapping[str, Any], to: Recipient, *, message_id: str,
            now: datetime) -> Email:
    """The email that event `event_type` sends to `to`."""
    template = TEMPLATES.get(event_type)
    if template is None:
        raise MalformedEvent(f"no email is sent for {event_type}")
    draft = template(payload, to)
    related = {key: payload[key] for key in RELATED_IDS if isinstance(payload.get(key), str)}
    return Email(id=f"eml_{secrets.token_hex(6)}", to=to.email, subject=draft.subject,
                 body=draft.body, event_type=event_type, message_id=message_id,
                 created_at=now, related=related)


# -- reading --------------------------------------------------------------------------------

def mailbox_of(caller: Claims, to: str | None) -> str | None:
    """Whose emails `caller` may list: anyone's for an admin (`to` filters, None = all), their
    own address for everyone else."""
    if caller.has_role(ADMIN):
        return normalise_address(to) if to else None
    own = caller.extra.get("email")
    if not isinstance(own, str) or not own:
        raise Forbidden("this token names no email address")
    own = normalise_address(own)
    if to is not None and normalise_address(to) != own:
        raise Forbidden("you may only read emails sent to your own address")
    return own


def require_reader(caller: Claims, email: Email) -> None:
    """Only an admin or the recipient may read an email."""
    own = caller.extra.get("email")
    if caller.has_role(ADMIN) or (isinstance(own, str) and normalise_address(own) == email.to):
        return
    raise Forbidden("you may only read emails sent to your own address")

"""The email domain's rules, without a database or a broker: what each event says, to whom,
and who may read it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from patterns.api import Forbidden
from patterns.auth import Claims
from services.email import domain
from services.email.domain import MalformedEvent, Recipient
from services.email.events import BINDINGS

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
ANN = Recipient("ann@example.org", "Ann")


def claims(subject: str, *roles: str, email: str | None = None) -> Claims:
    return Claims(subject=subject, roles=roles, issuer="microlab-users", audience="microlab",
                  issued_at=0, expires_at=1, extra={"email": email} if email else {})


def compose(event_type: str, payload: dict, to: Recipient = ANN) -> domain.Email:
    return domain.compose(event_type, payload, to, message_id="msg-1", now=NOW)


def test_every_bound_event_has_a_template_and_every_template_is_bound():
    assert {routing_key for _, routing_key in BINDINGS} == set(domain.TEMPLATES)


def test_welcome_greets_by_name_and_records_the_event():
    email = compose("user.registered", {"user_id": "usr_1", "email": "ann@example.org",
                                        "name": "Ann"})
    assert email.to == "ann@example.org"
    assert email.subject == "Welcome to Microlab Shop"
    assert email.body.startswith("Hello Ann,")
    assert (email.event_type, email.message_id, email.created_at) == ("user.registered",
                                                                      "msg-1", NOW)
    assert email.related == {"user_id": "usr_1"}
    assert email.id.startswith("eml_") and len(email.id) == len("eml_") + 12


def test_security_notice_says_when_the_password_changed():
    email = compose("user.password_changed", {"user_id": "usr_1", "email": "ann@example.org",
                                              "occurred_at": "2026-03-04T05:06:07.000Z"},
                    Recipient("ann@example.org"))
    assert email.subject == "Your password was changed"
    assert "2026-03-04T05:06:07.000Z" in email.body and email.body.startswith("Hello,")


def test_receipt_shows_the_total_in_currency():
    email = compose("order.confirmed", {"order_id": "ord_1", "user_id": "usr_1",
                                        "total_cents": 123405})
    assert email.subject == "Receipt for order ord_1"
    assert "$1234.05" in email.body
    assert email.related == {"order_id": "ord_1", "user_id": "usr_1"}


def test_cancellation_gives_the_reason():
    email = compose("order.cancelled", {"order_id": "ord_1", "user_id": "usr_1",
                                        "reason": "payment declined"})
    assert "ord_1" in email.subject and "payment declined" in email.body


def test_refund_notice_names_amount_order_and_payment():
    email = compose("payment.refunded", {"payment_id": "pay_1", "order_id": "ord_1",
                                         "user_id": "usr_1", "amount_cents": 999})
    assert email.subject == "Refund of $9.99 for order ord_1"
    assert "pay_1" in email.body
    assert email.related == {"payment_id": "pay_1", "order_id": "ord_1", "user_id": "usr_1"}


@pytest.mark.parametrize("event_type, payload", [
    ("order.confirmed", {"user_id": "usr_1", "total_cents": 100}),
    ("order.confirmed", {"order_id": "ord_1", "total_cents": "100"}),
    ("order.confirmed", {"order_id": "ord_1", "total_cents": True}),
    ("payment.refunded", {"order_id": "ord_1", "amount_cents": -1}),
    ("order.cancelled", {"order_id": ""}),
    ("product.created", {"product_id": "prd_1"}),
])
def test_an_event_missing_a_fact_is_malformed(event_type, payload):
    with pytest.raises(MalformedEvent):
        compose(event_type, payload)


def test_the_recipient_comes_from_the_payload_when_it_has_an_address():
    assert domain.recipient_in({"email": " Ann@Example.ORG", "name": "Ann"}) == ANN
    assert domain.recipient_in({"user_id": "usr_1"}) is None
    assert domain.recipient_in({"email": 42}) is None
    assert domain.user_id_of({"user_id": "usr_1"}) == "usr_1"
    with pytest.raises(MalformedEvent):
        domain.user_id_of({"order_id": "ord_1"})


def test_the_view_shows_utc_times():
    view = compose("order.cancelled", {"order_id": "ord_1"}).view()
    assert view["created_at"] == "2026-03-04T05:06:07.000Z"
    assert set(view) == {"id", "to", "subject", "body", "event_type", "message_id", "related",
                         "created_at"}


def test_an_admin_lists_everyone_or_filters_by_address():
    admin = claims("usr_9", "customer", "admin", email="boss@shop.io")
    assert domain.mailbox_of(admin, None) is None
    assert domain.mailbox_of(admin, " Ann@Example.org") == "ann@example.org"


def test_a_customer_lists_only_their_own_address():
    ann = claims("usr_1", "customer", email="Ann@example.org")
    assert domain.mailbox_of(ann, None) == "ann@example.org"
    assert domain.mailbox_of(ann, "ANN@example.org") == "ann@example.org"
    with pytest.raises(Forbidden):
        domain.mailbox_of(ann, "bob@example.org")
    with pytest.raises(Forbidden):
        domain.mailbox_of(claims("svc:x", "customer"), None)


def test_only_an_admin_or_the_recipient_reads_an_email():
    email = compose("order.cancelled", {"order_id": "ord_1"})
    domain.require_reader(claims("usr_1", "customer", email="ANN@example.org"), email)
    domain.require_reader(claims("usr_9", "admin"), email)
    with pytest.raises(Forbidden):
        domain.require_reader(claims("usr_2", "customer", email="bob@example.org"), email)

"""The users domain's rules, without a database: validation, login, password change, access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from patterns.api import BadRequest, Forbidden, Unauthorized, Unprocessable
from patterns.auth import Claims, verify_password
from services.users import domain
from services.users.domain import ADMIN, CUSTOMER, AdminNotConfigured
from services.users.events import password_changed, user_registered

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def new_user(email: str = "ann@example.org", password: str = "correct horse", **kwargs):
    return domain.register(email, password, kwargs.pop("name", "Ann"), now=NOW, **kwargs)


def claims(subject: str, *roles: str) -> Claims:
    return Claims(subject=subject, roles=roles, issuer="microlab-users", audience="microlab",
                  issued_at=0, expires_at=1)


def test_register_normalises_the_email_and_hashes_the_password():
    user = domain.register("  Ann@Example.ORG ", "correct horse", "  Ann  ", now=NOW)
    assert user.email == "ann@example.org" and user.name == "Ann"
    assert user.roles == (CUSTOMER,)
    assert user.id.startswith("usr_") and len(user.id) == len("usr_") + 12
    assert user.password_hash != "correct horse"
    assert verify_password("correct horse", user.password_hash)


def test_the_public_view_never_shows_the_password_or_its_hash():
    user = new_user()
    view = user.public_view()
    assert set(view) == {"id", "email", "name", "roles", "created_at", "updated_at",
                         "password_changed_at"}
    assert user.password_hash not in str(view) and "correct horse" not in str(view)
    assert view["created_at"] == "2026-01-02T03:04:05.678Z"


def test_naive_datetimes_from_mongodb_are_shown_as_utc():
    assert domain.iso(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000Z"
    assert domain.iso(None) is None


@pytest.mark.parametrize("email", ["", "ann", "ann@", "@example.org", "ann@example",
                                   "ann smith@example.org", "ann@exa mple.org",
                                   "a" * 250 + "@x.io", "ann\x00@example.org",
                                   "ann\ud800@example.org"])
def test_bad_email_addresses_are_refused(email):
    with pytest.raises(BadRequest) as refused:
        new_user(email=email)
    assert refused.value.details["fields"][0]["field"] == "email"


@pytest.mark.parametrize("password", ["short", "x" * 7, "x" * 129, "valid-but-\ud800"])
def test_passwords_must_be_8_to_128_characters_of_text(password):
    with pytest.raises(BadRequest, match="password|not valid text"):
        new_user(password=password)


def test_password_length_bounds_are_inclusive():
    assert new_user(password="x" * 8) and new_user(password="x" * 128)


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\tname"])
def test_names_must_be_1_to_100_printable_characters(name):
    with pytest.raises(BadRequest, match="name"):
        new_user(name=name)


def test_login_with_the_right_password_returns_the_user():
    user = new_user()
    assert domain.authenticate(user, "correct horse") is user


def test_unknown_email_and_wrong_password_get_the_same_refusal():
    with pytest.raises(Unauthorized) as wrong_password:
        domain.authenticate(new_user(), "wrong horse")
    with pytest.raises(Unauthorized) as unknown_email:
        domain.authenticate(None, "correct horse")
    assert wrong_password.value.message == unknown_email.value.message == domain.LOGIN_REFUSED


def test_change_password_needs_the_current_one():
    user = new_user()
    with pytest.raises(Forbidden):
        domain.change_password(user, "wrong horse", "battery staple", now=NOW)


def test_change_password_stores_a_new_hash_and_when():
    user = new_user()
    later = NOW + timedelta(hours=1)
    changed = domain.change_password(user, "correct horse", "battery staple", now=later)
    assert verify_password("battery staple", changed.password_hash)
    assert not verify_password("correct horse", changed.password_hash)
    assert changed.password_changed_at == changed.updated_at == later
    assert changed.created_at == user.created_at


@pytest.mark.parametrize("new_password, error", [("short", BadRequest),
                                                 ("correct horse", Unprocessable)])
def test_the_new_password_follows_the_rules_and_differs(new_password, error):
    with pytest.raises(error):
        domain.change_password(new_user(), "correct horse", new_password, now=NOW)


def test_rename_validates_and_touches_updated_at():
    later = NOW + timedelta(minutes=5)
    renamed = domain.rename(new_user(), " Annie ", now=later)
    assert renamed.name == "Annie" and renamed.updated_at == later
    with pytest.raises(BadRequest):
        domain.rename(new_user(), " ", now=later)


def test_only_the_user_or_an_admin_may_see_an_account():
    domain.require_self_or_admin(claims("usr_1", CUSTOMER), "usr_1")
    domain.require_self_or_admin(claims("usr_2", CUSTOMER, ADMIN), "usr_1")
    with pytest.raises(Forbidden):
        domain.require_self_or_admin(claims("usr_2", CUSTOMER), "usr_1")


def test_token_claims_carry_roles_email_and_name_but_no_secret():
    user = new_user(roles=(CUSTOMER, ADMIN))
    assert domain.token_claims(user) == {"roles": [CUSTOMER, ADMIN], "email": user.email,
                                         "name": "Ann"}


def test_events_carry_the_catalogued_facts_and_no_secret():
    user = new_user()
    registered = user_registered(user)
    assert (registered.exchange, registered.routing_key) == ("users", "user.registered")
    assert registered.payload == {"user_id": user.id, "email": user.email, "name": "Ann",
                                  "occurred_at": "2026-01-02T03:04:05.678Z"}
    changed = password_changed(user, NOW)
    assert changed.routing_key == "user.password_changed"
    assert set(changed.payload) == {"user_id", "email", "occurred_at"}


def test_dev_mode_falls_back_to_the_well_known_admin():
    assert domain.admin_credentials({}, dev_mode=True) == ("admin@microlab.local",
                                                           "admin-password")
    assert domain.admin_credentials({"ADMIN_EMAIL": "boss@shop.io",
                                     "ADMIN_PASSWORD": "long-enough"}, dev_mode=True) == (
        "boss@shop.io", "long-enough")


@pytest.mark.parametrize("env", [{}, {"ADMIN_EMAIL": "boss@shop.io"},
                                 {"ADMIN_PASSWORD": "long-enough"}])
def test_outside_dev_mode_the_admin_must_be_configured(env):
    with pytest.raises(AdminNotConfigured, match="ADMIN_EMAIL and ADMIN_PASSWORD must both"):
        domain.admin_credentials(env, dev_mode=False)


def test_a_configured_admin_must_pass_the_same_rules():
    with pytest.raises(AdminNotConfigured, match="password"):
        domain.admin_credentials({"ADMIN_EMAIL": "boss@shop.io", "ADMIN_PASSWORD": "short"},
                                 dev_mode=False)

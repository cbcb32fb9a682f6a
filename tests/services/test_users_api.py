"""The users service in-process, on the embedded MongoDB and the real RabbitMQ."""

from __future__ import annotations

import functools
import logging
import statistics
import time
import uuid

import pytest

from patterns.bus import Bus, Message
from services.users.app import create_app
from services.users.domain import AdminNotConfigured
from tests.helpers import wait_for

PASSWORD = "correct horse"


@pytest.fixture
def settings(make_settings):
    return make_settings("users")


@pytest.fixture
def app(build_app, settings):
    return build_app(functools.partial(create_app, env={}), settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def published(amqp_url, settings):
    """Every event the users exchange carries while the test runs."""
    messages: list[Message] = []
    bus = Bus(amqp_url, namespace=settings.bus_namespace)
    consumer = bus.consumer(f"test-users-{uuid.uuid4().hex[:8]}", messages.append,
                            ("users", "user.*")).start()
    yield messages
    consumer.stop()


def register(client, email: str | None = None, password: str = PASSWORD, name: str = "Ann") -> dict:
    email = email or f"ann-{uuid.uuid4().hex[:6]}@example.org"
    response = client.post("/api/v1/users/register",
                           json={"email": email, "password": password, "name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def login(client, email: str, password: str = PASSWORD) -> str:
    response = client.post("/api/v1/users/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- registration ---------------------------------------------------------------------------

def test_register_returns_the_user_without_any_password(client):
    user = register(client, email="Ann.Lee@Example.ORG", name="Ann Lee")
    assert user["email"] == "ann.lee@example.org" and user["name"] == "Ann Lee"
    assert user["roles"] == ["customer"] and user["id"].startswith("usr_")
    assert "password_hash" not in user and "password" not in user
    assert PASSWORD not in str(user) and "scrypt" not in str(user)


def test_the_same_email_in_another_case_is_taken(client):
    register(client, email="bob@example.org")
    response = client.post("/api/v1/users/register", json={
        "email": "BOB@example.org", "password": PASSWORD, "name": "Other Bob"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "email_taken"


@pytest.mark.parametrize("body, field", [
    ({"email": "not-an-email", "password": PASSWORD, "name": "Ann"}, "email"),
    ({"email": "ann@example.org", "password": "short", "name": "Ann"}, "password"),
    ({"email": "ann@example.org", "password": "x" * 129, "name": "Ann"}, "password"),
    ({"email": "ann@example.org", "password": PASSWORD, "name": ""}, "name"),
    ({"email": "ann@example.org", "password": PASSWORD, "name": "   "}, "name"),
    ({"email": "ann@example.org", "password": PASSWORD, "name": "x" * 101}, "name"),
    ({"email": "ann@example.org", "password": PASSWORD}, ""),
    ({"email": "ann@example.org", "password": PASSWORD, "name": "Ann", "roles": ["admin"]}, ""),
])
def test_bad_registrations_are_400_naming_the_field(client, body, field):
    response = client.post("/api/v1/users/register", json=body)
    assert response.status_code == 400
    fields = [entry["field"] for entry in response.get_json()["error"]["fields"]]
    assert field in fields


@pytest.mark.parametrize("password", ["short-1", "long-" * 30])
def test_a_refused_password_is_not_echoed(client, password):
    response = client.post("/api/v1/users/register", json={
        "email": "ann@example.org", "password": password, "name": "Ann"})
    assert response.status_code == 400
    assert password not in response.get_data(as_text=True)


def test_an_oversized_body_is_refused_before_it_is_read(client):
    response = client.post("/api/v1/users/login", json={
        "email": "ann@example.org", "password": "x" * 100_000})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"


def test_a_body_that_is_not_json_is_400(client):
    response = client.post("/api/v1/users/register", data="email=ann",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400


def test_registering_publishes_user_registered_without_secrets(client, published):
    user = register(client, name="Eve")
    message = wait_for(lambda: next((m for m in published
                                     if m.body.get("user_id") == user["id"]), None))
    assert message.routing_key == "user.registered"
    assert set(message.body) == {"user_id", "email", "name", "occurred_at"}
    assert message.body["email"] == user["email"] and message.body["name"] == "Eve"
    assert PASSWORD not in str(message.body) and "scrypt" not in str(message.body)


# -- login ----------------------------------------------------------------------------------

def test_login_issues_a_token_naming_the_user(app, client):
    user = register(client, name="Cy")
    response = client.post("/api/v1/users/login",
                           json={"email": user["email"].upper(), "password": PASSWORD})
    assert response.status_code == 200
    assert response.get_json()["user"] == user
    claims = app.extensions["kit"].tokens.verify(response.get_json()["token"])
    assert claims.subject == user["id"] and claims.roles == ("customer",)
    assert claims.extra == {"email": user["email"], "name": "Cy"}


def test_wrong_password_and_unknown_email_look_the_same(client):
    user = register(client)
    wrong = client.post("/api/v1/users/login", json={"email": user["email"],
                                                     "password": "wrong horse"})
    unknown = client.post("/api/v1/users/login", json={"email": "nobody@example.org",
                                                       "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json()["error"]["message"] == unknown.get_json()["error"]["message"]


def test_unknown_emails_cost_a_password_check_too(client):
    """No shortcut for an unknown email: its timing would tell who has an account."""
    user = register(client)

    def duration(email: str) -> float:
        started = time.perf_counter()
        client.post("/api/v1/users/login", json={"email": email, "password": "wrong horse"})
        return time.perf_counter() - started

    known = statistics.median(duration(user["email"]) for _ in range(5))
    unknown = statistics.median(duration("nobody@example.org") for _ in range(5))
    assert unknown > known * 0.3  # a skipped scrypt would be ~20x faster, not ~1x


# -- profile and password -------------------------------------------------------------------

def test_profile_needs_a_token(client):
    assert client.get("/api/v1/users/me").status_code == 401
    assert client.get("/api/v1/users/me", headers=bearer("not-a-jwt")).status_code == 401


def test_read_and_rename_my_profile(client):
    user = register(client, name="Dee")
    token = login(client, user["email"])
    assert client.get("/api/v1/users/me", headers=bearer(token)).get_json() == user
    response = client.patch("/api/v1/users/me", json={"name": " Deirdre "}, headers=bearer(token))
    assert response.status_code == 200 and response.get_json()["name"] == "Deirdre"
    assert client.get("/api/v1/users/me", headers=bearer(token)).get_json()["name"] == "Deirdre"
    refused = client.patch("/api/v1/users/me", json={"name": "x", "email": "y@z.io"},
                           headers=bearer(token))
    assert refused.status_code == 400


def test_a_token_for_an_account_that_does_not_exist_is_404(app, client):
    token = app.extensions["kit"].tokens.issue("usr_000000000000", roles=["customer"])
    assert client.get("/api/v1/users/me", headers=bearer(token)).status_code == 404


def test_change_password_needs_the_current_one_and_announces_the_change(client, published):
    user = register(client)
    token = login(client, user["email"])
    wrong = client.post("/api/v1/users/me/password", headers=bearer(token), json={
        "current_password": "wrong horse", "new_password": "battery staple"})
    assert wrong.status_code == 403

    response = client.post("/api/v1/users/me/password", headers=bearer(token), json={
        "current_password": PASSWORD, "new_password": "battery staple"})
    assert response.status_code == 200
    assert response.get_json()["password_changed_at"] is not None
    assert "battery" not in str(response.get_json())
    login(client, user["email"], "battery staple")
    old = client.post("/api/v1/users/login", json={"email": user["email"], "password": PASSWORD})
    assert old.status_code == 401

    message = wait_for(lambda: next((m for m in published
                                     if m.routing_key == "user.password_changed"
                                     and m.body["user_id"] == user["id"]), None))
    assert set(message.body) == {"user_id", "email", "occurred_at"}
    assert message.body["email"] == user["email"]


@pytest.mark.parametrize("new_password, status", [("short", 400), (PASSWORD, 422)])
def test_the_new_password_follows_the_rules(client, new_password, status):
    token = login(client, register(client)["email"])
    response = client.post("/api/v1/users/me/password", headers=bearer(token),
                           json={"current_password": PASSWORD, "new_password": new_password})
    assert response.status_code == status


# -- one user, by id ------------------------------------------------------------------------

def test_a_user_is_visible_to_themself_and_admins_only(client):
    ann, bob = register(client), register(client)
    ann_token, bob_token = login(client, ann["email"]), login(client, bob["email"])
    admin_token = login(client, "admin@microlab.local", "admin-password")

    assert client.get(f"/api/v1/users/{ann['id']}", headers=bearer(ann_token)).get_json() == ann
    assert client.get(f"/api/v1/users/{ann['id']}", headers=bearer(bob_token)).status_code == 403
    assert client.get(f"/api/v1/users/{ann['id']}",
                      headers=bearer(admin_token)).get_json() == ann
    assert client.get("/api/v1/users/usr_unknown", headers=bearer(admin_token)).status_code == 404
    # A customer learns nothing about other ids, existing or not.
    assert client.get("/api/v1/users/usr_unknown", headers=bearer(bob_token)).status_code == 403


# -- the first admin ------------------------------------------------------------------------

def test_the_dev_admin_exists_once_however_often_the_service_starts(build_app, settings):
    first = build_app(functools.partial(create_app, env={}), settings)
    build_app(functools.partial(create_app, env={}), settings)
    client = first.test_client()
    token = login(client, "admin@microlab.local", "admin-password")
    me = client.get("/api/v1/users/me", headers=bearer(token)).get_json()
    assert me["roles"] == ["customer", "admin"]
    users = first.extensions["kit"].db["users"]
    assert users.count_documents({"email": "admin@microlab.local"}) == 1


def test_the_admin_comes_from_the_environment(build_app, make_settings):
    env = {"ADMIN_EMAIL": "Boss@Shop.io", "ADMIN_PASSWORD": "very-secret-1"}
    app = build_app(functools.partial(create_app, env=env), make_settings("users", env="prod"))
    client = app.test_client()
    token = login(client, "boss@shop.io", "very-secret-1")
    assert "admin" in app.extensions["kit"].tokens.verify(token).roles
    refused = client.post("/api/v1/users/login", json={"email": "admin@microlab.local",
                                                       "password": "admin-password"})
    assert refused.status_code == 401


def test_an_existing_account_named_as_admin_is_promoted_keeping_its_password(build_app,
                                                                               settings):
    client = build_app(functools.partial(create_app, env={}), settings).test_client()
    register(client, email="carol@example.org")
    env = {"ADMIN_EMAIL": "carol@example.org", "ADMIN_PASSWORD": "another-password"}
    client = build_app(functools.partial(create_app, env=env), settings).test_client()
    token = login(client, "carol@example.org", PASSWORD)
    me = client.get("/api/v1/users/me", headers=bearer(token)).get_json()
    assert "admin" in me["roles"]


def test_outside_dev_mode_the_service_refuses_to_start_without_an_admin(build_app,
                                                                          make_settings):
    with pytest.raises(AdminNotConfigured, match="ADMIN_EMAIL and ADMIN_PASSWORD"):
        build_app(functools.partial(create_app, env={}), make_settings("users", env="prod"))


# -- secrets stay secret ----------------------------------------------------------------------

def test_no_password_reaches_the_logs(client, caplog):
    caplog.set_level(logging.INFO)  # the level services log at (the driver debugs commands)
    user = register(client, password="log-canary-password")
    token = login(client, user["email"], "log-canary-password")
    client.post("/api/v1/users/login", json={"email": user["email"], "password": "canary-wrong"})
    client.post("/api/v1/users/me/password", headers=bearer(token), json={
        "current_password": "log-canary-password", "new_password": "canary-new-password"})
    logged = " ".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)
    assert "user registered" in logged  # the logs were captured
    assert "canary" not in logged and "scrypt$" not in logged

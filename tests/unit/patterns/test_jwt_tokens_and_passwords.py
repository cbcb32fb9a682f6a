"""JWT issue/verify, the secret's rules per environment, and password hashing."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from patterns.auth import (
    DEV_SECRET,
    InsecureSecret,
    TokenExpired,
    TokenInvalid,
    Tokens,
    hash_password,
    secret_from_env,
    verify_password,
)

SECRET = "s" * 32
OTHER_SECRET = "o" * 32


def make_tokens(secret: str = SECRET, **settings) -> Tokens:
    return Tokens(secret, **{"issuer": "microlab-users", "audience": "microlab", **settings})


def test_an_issued_token_verifies_to_its_claims():
    tokens = make_tokens()

    claims = tokens.verify(tokens.issue("user-42", roles=["customer", "admin"], email="a@b.c"))

    assert claims.subject == "user-42"
    assert claims.roles == ("customer", "admin")
    assert claims.has_role("admin") and not claims.has_role("auditor")
    assert (claims.issuer, claims.audience) == ("microlab-users", "microlab")
    assert claims.expires_at - claims.issued_at == 15 * 60
    assert claims.extra == {"email": "a@b.c"}


def test_an_expired_token_is_refused_as_expired():
    an_hour_ago = time.time() - 3600
    issued_earlier = make_tokens(clock=lambda: an_hour_ago)

    with pytest.raises(TokenExpired):
        make_tokens().verify(issued_earlier.issue("user-42", ttl=60))


def test_a_token_signed_with_another_secret_is_invalid():
    forged = make_tokens(OTHER_SECRET).issue("user-42", roles=["admin"])
    with pytest.raises(TokenInvalid):
        make_tokens().verify(forged)


def test_a_tampered_payload_is_invalid():
    header, payload, signature = make_tokens().issue("user-42", roles=["customer"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    tampered = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    with pytest.raises(TokenInvalid):
        make_tokens().verify(f"{header}.{tampered}.{signature}")


def _unsigned(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_alg_none_is_refused():
    now = int(time.time())
    token = _unsigned(
        {"sub": "user-42", "roles": ["admin"], "iss": "microlab-users", "aud": "microlab",
         "iat": now, "exp": now + 600}
    )
    with pytest.raises(TokenInvalid):
        make_tokens().verify(token)


def test_another_algorithm_with_the_right_secret_is_refused():
    now = int(time.time())
    token = jwt.encode(
        {"sub": "u", "iss": "microlab-users", "aud": "microlab", "iat": now, "exp": now + 600},
        SECRET + SECRET,
        algorithm="HS512",
    )
    with pytest.raises(TokenInvalid):
        make_tokens(SECRET + SECRET).verify(token)


def test_a_token_from_another_issuer_is_invalid():
    token = make_tokens(issuer="somebody-else").issue("user-42")
    with pytest.raises(TokenInvalid):
        make_tokens().verify(token)


def test_a_token_for_another_audience_is_invalid():
    token = make_tokens(audience="another-system").issue("user-42")
    with pytest.raises(TokenInvalid):
        make_tokens().verify(token)


@pytest.mark.parametrize("missing", ["sub", "exp", "iss", "aud"])
def test_a_token_missing_a_required_claim_is_invalid(missing):
    now = int(time.time())
    claims = {"sub": "u", "iss": "microlab-users", "aud": "microlab", "iat": now, "exp": now + 60}
    del claims[missing]
    with pytest.raises(TokenInvalid):
        make_tokens().verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_roles_must_be_a_list_of_strings():
    now = int(time.time())
    claims = {"sub": "u", "roles": "admin", "iss": "microlab-users", "aud": "microlab",
              "iat": now, "exp": now + 60}
    with pytest.raises(TokenInvalid):
        make_tokens().verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_garbage_is_invalid():
    with pytest.raises(TokenInvalid):
        make_tokens().verify("not.a.token")


def test_registered_claims_cannot_be_smuggled_in_as_extras():
    with pytest.raises(ValueError):
        make_tokens().issue("user-42", exp=9_999_999_999)


def test_a_short_secret_is_refused_outright():
    with pytest.raises(InsecureSecret):
        Tokens("too-short", issuer="i", audience="a")


def test_dev_mode_is_the_default_and_falls_back_to_the_dev_secret():
    assert secret_from_env({}) == DEV_SECRET
    assert secret_from_env({"MICROLAB_ENV": "dev"}) == DEV_SECRET


def test_a_configured_secret_is_used_in_any_environment():
    assert secret_from_env({"JWT_SECRET": SECRET}) == SECRET
    assert secret_from_env({"JWT_SECRET": SECRET, "MICROLAB_ENV": "prod"}) == SECRET


def test_prod_without_a_secret_is_refused_with_a_clear_message():
    with pytest.raises(InsecureSecret, match="JWT_SECRET is not set and MICROLAB_ENV=prod"):
        secret_from_env({"MICROLAB_ENV": "prod"})


def test_the_dev_secret_is_refused_outside_dev():
    with pytest.raises(InsecureSecret, match="public dev secret"):
        secret_from_env({"MICROLAB_ENV": "staging", "JWT_SECRET": DEV_SECRET})


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_a_short_secret_from_env_is_refused(env):
    with pytest.raises(InsecureSecret, match="at least 32 bytes"):
        secret_from_env({"MICROLAB_ENV": env, "JWT_SECRET": "short"})


# Cheap scrypt settings keep the tests fast; the stored hash carries its own parameters.
CHEAP = {"n": 2**10, "r": 8, "p": 1}


def test_a_password_verifies_against_its_hash_and_a_wrong_one_does_not():
    stored = hash_password("correct horse", **CHEAP)

    assert stored.startswith("scrypt$1024$8$1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)


def test_the_same_password_hashes_differently_each_time():
    assert hash_password("pw", **CHEAP) != hash_password("pw", **CHEAP)


def test_the_default_cost_round_trips():
    assert verify_password("pw", hash_password("pw"))


@pytest.mark.parametrize(
    "stored",
    ["", "plain-text", "bcrypt$1$2$3$4$5", "scrypt$x$8$1$AA==$AA==", "scrypt$1024$8$1$!!$!!"],
)
def test_a_malformed_stored_hash_never_verifies(stored):
    assert not verify_password("pw", stored)

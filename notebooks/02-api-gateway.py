# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The API gateway
#
# Customers never see the nine services; they see one address, the gateway. It decides where
# each request goes, who may make it, and how often. In this notebook you watch it route and
# rewrite a path, refuse a bad token and accept a good one, stop a password-guessing burst with
# `429 Too Many Requests`, and keep the dashboard page up while one part behind it is down.
#
# The rules are data and pure functions in
# [services/gateway/domain.py](../services/gateway/domain.py); the wiring is in
# [services/gateway/app.py](../services/gateway/app.py); tokens are
# [patterns/auth.py](../patterns/auth.py), rate limits [patterns/ratelimit.py](../patterns/ratelimit.py).

# %%
import base64
import json
import time

import jwt
import requests

from microlab.lab import Lab, wait_until
from services.gateway.domain import ROUTES, route_request

lab = Lab.connect()
G = lab.gateway

# %% [markdown]
# ## Routing and rewriting
#
# The route table maps a public prefix to a service and the prefix the service uses itself.
# Services version their API (`/api/v1/...`); the public paths stay short and can outlive a
# version.

# %%
for route in ROUTES:
    print(f"{route.prefix:<20} -> {route.service:<14} {route.upstream_prefix}")

destination = route_request("/api/products/prd_123")
print(destination.service, destination.path)
assert (destination.service, destination.path) == ("products", "/api/v1/products/prd_123")

# %% [markdown]
# The same catalogue page asked of the gateway and of the products service directly: the gateway
# passed the request through with its path rewritten, and the answer is the same. (In a real
# deployment only the gateway is reachable from outside; here everything is on your machine.)

# %%
through_gateway = requests.get(f"{G}/api/products", params={"limit": 3}, timeout=10)
direct = requests.get(f"{lab.urls['products']}/api/v1/products", params={"limit": 3}, timeout=10)
print([item["name"] for item in through_gateway.json()["items"]])
assert through_gateway.status_code == direct.status_code == 200
assert through_gateway.json()["items"] == direct.json()["items"]

unknown = requests.get(f"{G}/api/warehouse", timeout=10)
print(unknown.status_code, unknown.json()["error"]["message"])
assert unknown.status_code == 404

# %% [markdown]
# ## Who is calling: JWTs
#
# Logging in gives a customer a JSON Web Token: a few claims (who, which roles, until when),
# signed by the users service. Anyone can *read* a token — it is only base64 — but nobody can
# *change* it without the signing secret. The gateway checks the signature, the issuer, the
# audience and the expiry on every private route before passing the request on.

# %%
customer = lab.customer("Linus")
token = customer.headers["Authorization"].split()[1]
claims = jwt.decode(token, options={"verify_signature": False})
print({key: claims[key] for key in ("sub", "roles", "iss", "aud", "exp")})
assert claims["sub"] == customer.user["id"]


def profile(token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{G}/api/users/me", headers=headers, timeout=10)


forged = jwt.encode({**claims, "roles": ["customer", "admin"]}, "a-secret-we-guessed" * 2,
                    algorithm="HS256")
unsigned = jwt.encode({**claims, "roles": ["admin"]}, key=None, algorithm="none")
# The real header and signature around a payload that says "admin": the signature no longer fits.
header, _, signature = token.split(".")
payload = base64.urlsafe_b64encode(json.dumps({**claims, "roles": ["admin"]}).encode())
tampered = f"{header}.{payload.decode().rstrip('=')}.{signature}"

answers = {"no token": profile(None), "forged signature": profile(forged),
           "alg=none": profile(unsigned), "tampered": profile(tampered),
           "the real one": profile(token)}
for what, answer in answers.items():
    print(f"{what:<17} {answer.status_code}  {answer.headers.get('WWW-Authenticate', '')}")
assert [answer.status_code for answer in answers.values()] == [401, 401, 401, 401, 200]
assert answers["the real one"].json()["email"] == customer.user["email"]

# %% [markdown]
# ## How often: rate limits
#
# Each client has a bucket of tokens; every request takes one and the bucket refills at a steady
# rate. A burst is fine up to the bucket's size; after that the gateway answers **429** with
# `Retry-After` (seconds until a token is back) and `RateLimit-*` headers, without bothering the
# services behind it. Logins get a much smaller bucket, per client address, because a login
# endpoint is where passwords are guessed.

# %%
statuses = []
for attempt in range(15):
    guess = requests.post(f"{G}/api/users/login", timeout=10,
                          json={"email": customer.user["email"], "password": f"guess-{attempt}"})
    statuses.append(guess.status_code)
    if guess.status_code == 429:
        break
print(statuses)
print({name: guess.headers.get(name) for name in
       ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")})
assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, statuses
assert int(guess.headers["Retry-After"]) >= 1
assert guess.json()["error"]["code"] == "rate_limited"

# %% [markdown]
# The bucket refills by itself. Waiting until it is full again also leaves the logins of the
# next notebooks unaffected.

# %%
capacity = int(guess.headers["RateLimit-Limit"])
refill_seconds = int(guess.headers["RateLimit-Reset"])
print(f"a full bucket of {capacity} logins is back in about {refill_seconds} s")
time.sleep(refill_seconds + 1)
again = requests.post(f"{G}/api/users/login", timeout=10,
                      json={"email": customer.user["email"], "password": customer.password})
assert again.status_code == 200, again.text

# %% [markdown]
# ## One page, many services: the dashboard
#
# `/api/dashboard` gathers the customer's profile, orders, unread notifications and a few
# products from four services. When one of them is down, the page still comes back: the missing
# part is `null` and `degraded` names it, so the front end can show everything else.

# %%
healthy = customer.get(f"{G}/api/dashboard", timeout=30).json()
print("degraded:", healthy["degraded"])
assert healthy["degraded"] == []

lab.stop("notifications")
partial = customer.get(f"{G}/api/dashboard", timeout=30)
body = partial.json()
print(partial.status_code, "degraded:", body["degraded"], "| profile:", body["profile"]["email"])
assert partial.status_code == 200
assert body["degraded"] == ["notifications"] and body["notifications"] is None
assert body["profile"]["email"] == customer.user["email"] and body["products"]

lab.start("notifications")
wait_until(lambda: customer.get(f"{G}/api/dashboard", timeout=30).json()["degraded"] == [],
           timeout=30, what="the dashboard whole again");

# %% [markdown]
# ## Leave the sandbox as we found it

# %%
lab.tidy()

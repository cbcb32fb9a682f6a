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
# # 03 · Synchronous calls: timeouts and retries
#
# When a service calls another over HTTP and waits for the answer, every slow or failed answer
# becomes its own problem. Here we slow one edge down and watch a timeout end the wait early,
# then make the edge drop a third of its connections and compare naive retries with backoff,
# jitter and a retry budget, and finally write the same policy with `tenacity`.
# The code: [patterns/http.py](../patterns/http.py) (the service client),
# [patterns/retry.py](../patterns/retry.py) (retries, budget, stats) and
# [patterns/clock.py](../patterns/clock.py) (time you can fake).

# %%
from microlab.lab import Lab, wait_until
lab = Lab.connect()

# %% [markdown]
# ## An edge of our own
#
# Every hop of the shop already runs through a Toxiproxy proxy, but slowing one of those would
# slow the shop for everybody. So we make a private proxy to the products service and break
# only that one. `lab.tidy()` at the end deletes it.

# %%
import time

import requests

toxiproxy = lab.toxiproxy()
EDGE_NAME = "nb03-products"
if toxiproxy.get_proxy(EDGE_NAME):  # left over from an interrupted run
    toxiproxy.get_proxy(EDGE_NAME).destroy()
edge = toxiproxy.create(upstream=lab.urls["products"].removeprefix("http://"), name=EDGE_NAME)
EDGE_URL = f"http://{edge.listen}"  # the proxy picked a free port

product = lab.products()[0]
PRODUCT_PATH = f"/api/v1/products/{product['id']}"
answer = requests.get(EDGE_URL + PRODUCT_PATH, timeout=5)
assert answer.status_code == 200 and answer.json()["id"] == product["id"]
print(f"{EDGE_URL}{PRODUCT_PATH} -> {answer.json()['name']}")

# %% [markdown]
# ## 1. A timeout turns "wait forever" into "fail after a second"
#
# We add a `latency` toxic: every answer on our edge now arrives 3 s late. Three callers ask
# for the same product:
#
# - `requests` with no `timeout` (its default!) waits as long as the peer takes;
# - `requests` with `timeout=1` gives up after a second;
# - our `ServiceClient` with `read_timeout=1.0` does the same, and says what happened in the
#   words the shop's services use: `ServiceUnavailable`.
#
# A caller that waits 3 s holds a thread, a connection and its own caller's patience for 3 s.
# Put a few hundred such requests in flight and the slow service has made its callers slow too.

# %%
from patterns.http import ServiceClient, ServiceUnavailable

LATENCY_S, TIMEOUT_S = 3.0, 1.0
waited = {}
edge.add_toxic(type="latency", name="slow", attributes={"latency": int(LATENCY_S * 1000)})
try:
    start = time.monotonic()
    patient = requests.get(EDGE_URL + PRODUCT_PATH)  # no timeout at all
    waited["requests, no timeout"] = time.monotonic() - start

    start = time.monotonic()
    try:
        requests.get(EDGE_URL + PRODUCT_PATH, timeout=TIMEOUT_S)
        raise AssertionError("requests should have timed out")
    except requests.Timeout as error:
        waited["requests, timeout=1"] = time.monotonic() - start
        print("requests:      ", type(error).__name__)

    products = ServiceClient("products", EDGE_URL, caller="notebook", read_timeout=TIMEOUT_S)
    start = time.monotonic()
    try:
        products.get_json(PRODUCT_PATH)
        raise AssertionError("ServiceClient should have timed out")
    except ServiceUnavailable as error:
        waited["ServiceClient, read_timeout=1"] = time.monotonic() - start
        timed_out = error
        print("ServiceClient: ", error)
finally:
    edge.destroy_toxic("slow")

for who, seconds in waited.items():
    print(f"{who:<32} waited {seconds:4.2f} s")

assert patient.status_code == 200 and waited["requests, no timeout"] >= 0.9 * LATENCY_S
for who in ("requests, timeout=1", "ServiceClient, read_timeout=1"):
    assert waited[who] >= 0.9 * TIMEOUT_S, f"{who} gave up before its timeout"
    assert waited[who] < 0.75 * LATENCY_S, f"{who} waited for the slow answer after all"
assert timed_out.reason == "ReadTimeout"
# The request did reach products: only its answer was late. A timed-out *charge* may have
# been made all the same, which is why orders asks payments before giving up on one.
assert timed_out.may_have_arrived

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 2.6))
names = list(waited)
ax.barh(names, [waited[name] for name in names], color=["tab:red", "tab:blue", "tab:green"])
ax.axvline(TIMEOUT_S, color="black", linestyle="--", label=f"timeout {TIMEOUT_S:.0f} s")
ax.axvline(LATENCY_S, color="grey", linestyle=":", label=f"the peer's delay {LATENCY_S:.0f} s")
ax.invert_yaxis()
ax.set_xlabel("seconds until the caller got an answer or an error")
ax.set_title("A slow peer: the timeout caps how long the caller waits")
ax.legend(loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# `read_timeout` bounds each wait for the next chunk of the answer, not the whole call: a peer
# that drips one byte every 0.9 s never trips it. Our latency toxic holds back the whole
# answer, so here it fires once. Try next: set `LATENCY_S = 0.8` and run the cell again — all
# three callers now get the product (and the asserts tell you the timeouts did not fire).
#
# ## 2. A flaky edge, and four ways to call it
#
# Now the edge does not slow down: it drops connections. A `reset_peer` toxic with
# `toxicity=0.3` resets about 30% of the connections it sees, and toxicity is drawn once per
# connection. So every attempt opens a fresh connection (`Connection: close`) and rolls the
# dice again — as it would against a pod being replaced, or a flaky load balancer.
#
# The four policies, all `patterns.retry.Retry` given to the `ServiceClient` (which retries
# only idempotent calls — a GET is one):
#
# | policy | tries | wait between tries | limit on retries |
# |---|---|---|---|
# | no retries | 1 | — | — |
# | naive | 3 | none | none |
# | backoff + jitter | 3 | random in [0, 50 ms · 2ⁿ] | none |
# | backoff + jitter + budget | 3 | random in [0, 50 ms · 2ⁿ] | retries < 10% of recent requests |
#
# The budget's default also keeps a reserve of 1 retry per second so a quiet client can still
# retry; we set it to 0 so the 10% shows plainly.

# %%
from patterns.retry import Retry, RetryBudget

FRESH_CONNECTION = {"Connection": "close"}  # one connection, one toss of the toxic's coin


def policies() -> dict[str, Retry]:
    """A fresh set each run, so counts and budgets start at zero."""
    return {
        "no retries": Retry(attempts=1),
        "naive": Retry(attempts=3, base_delay=0),
        "backoff + jitter": Retry(attempts=3, base_delay=0.05),
        "backoff + jitter + budget": Retry(
            attempts=3, base_delay=0.05, budget=RetryBudget(ratio=0.1, min_per_second=0)),
    }


def call_many(policy: Retry, count: int) -> dict:
    """`count` GETs of one product through a client with this retry policy."""
    client = ServiceClient("products", EDGE_URL, caller="notebook", read_timeout=1.0,
                           retry=policy)
    succeeded = 0
    for _ in range(count):
        try:
            client.request("GET", PRODUCT_PATH, headers=FRESH_CONNECTION)
            succeeded += 1
        except ServiceUnavailable:
            pass
    client.close()
    return {"success rate": succeeded / count, "attempts per request": policy.stats.amplification,
            "stats": policy.stats}


FLAKY_REQUESTS = 40
flaky = {}
edge.add_toxic(type="reset_peer", name="flaky", toxicity=0.3, attributes={"timeout": 0})
try:
    for name, policy in policies().items():
        flaky[name] = call_many(policy, FLAKY_REQUESTS)
finally:
    edge.destroy_toxic("flaky")

for name, result in flaky.items():
    print(f"{name:<27} success {result['success rate']:5.0%}   "
          f"attempts/request {result['attempts per request']:.2f}   {result['stats']}")

# %% [markdown]
# What to read in these numbers:
#
# - **no retries** fails about one request in three: the raw flakiness of the edge.
# - **naive** and **backoff + jitter** hide nearly all of it (a request fails only if all three
#   tries hit a reset: 0.3³ ≈ 3%), and pay with about 1.4 attempts per request: 40% more load.
# - **the budget** lets only a few retries through (10% of the requests), so more requests
#   fail, but the edge never sees more than about 1.1 attempts per request.
#
# With failures as independent as these, waiting between tries does not raise the success
# rate. Backoff pays off when a fault lasts a moment (a restart) and when many clients retry at
# once: jitter spreads them out instead of sending them back in one wave.

# %%
no_budget = [flaky["naive"]["stats"], flaky["backoff + jitter"]["stats"]]
pooled_amplification = (sum(s.attempts for s in no_budget) / sum(s.requests for s in no_budget))

assert flaky["no retries"]["attempts per request"] == 1.0
assert flaky["naive"]["success rate"] >= 0.85 and flaky["backoff + jitter"]["success rate"] >= 0.85
assert flaky["naive"]["success rate"] > flaky["no retries"]["success rate"]
# Unlimited retries multiply the load; the budget holds it near 1.1x.
assert pooled_amplification > 1.15, pooled_amplification
assert flaky["backoff + jitter + budget"]["attempts per request"] <= 1.15

# %% [markdown]
# ## 3. The retry storm: the same policies against a dead edge
#
# Flakiness is where retries help. An outage is where they hurt: every retry of a request to a
# service that is down is wasted load on a service trying to come back. We take the edge down
# (`edge.down()` refuses every connection) and send 10 requests with each policy.
# With 3 tries each, every caller triples its load, and if the caller's caller also retries 3
# times, the load at the bottom of the chain is 9x.

# %%
OUTAGE_REQUESTS = 10
outage = {}
with edge.down():  # toxiproxy-python enables the proxy again on the way out, even on error
    for name, policy in policies().items():
        outage[name] = call_many(policy, OUTAGE_REQUESTS)

for name, result in outage.items():
    print(f"{name:<27} success {result['success rate']:5.0%}   "
          f"attempts/request {result['attempts per request']:.2f}   {result['stats']}")

assert all(result["success rate"] == 0 for result in outage.values())
assert outage["naive"]["attempts per request"] == 3.0
assert outage["backoff + jitter"]["attempts per request"] == 3.0  # waiting does not cut load
assert outage["backoff + jitter + budget"]["attempts per request"] <= 1.15
assert outage["backoff + jitter + budget"]["stats"].budget_rejections >= OUTAGE_REQUESTS - 2

# %%
import numpy as np

labels = list(flaky)
x = np.arange(len(labels))
colors = ["tab:grey", "tab:red", "tab:orange", "tab:green"]
fig, (load, success) = plt.subplots(1, 2, figsize=(12, 4))
load.bar(x - 0.2, [flaky[n]["attempts per request"] for n in labels], 0.4, color=colors,
         label="flaky edge (30% resets)")
load.bar(x + 0.2, [outage[n]["attempts per request"] for n in labels], 0.4, color=colors,
         hatch="//", edgecolor="black", label="edge down")
load.axhline(1.0, color="black", linewidth=0.8)
load.set_xticks(x, labels, rotation=15)
load.set_ylabel("attempts per request")
load.set_ylim(0, 3.6)
load.set_title("Load on the dependency (retry amplification)")
load.legend(loc="upper left")
success.bar(x, [flaky[n]["success rate"] * 100 for n in labels], color=colors)
success.set_xticks(x, labels, rotation=15)
success.set_ylim(0, 105)
success.set_ylabel("% of requests that succeeded")
success.set_title(f"Client success on the flaky edge ({FLAKY_REQUESTS} requests each)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The trade-off in one picture: unlimited retries buy success on a flaky edge and triple the
# load on a dead one; a budget gives up a little success to keep the load flat in both.
# The shop's services share one `RetryBudget` per service (`kit.retry_budget` in
# [patterns/service.py](../patterns/service.py)) with the default reserve.
#
# ## 4. What the waits look like
#
# Timing real retries on a noisy laptop tells us little about the waits themselves. Because
# `Retry` takes its `clock` as an argument, we can hand it a `FakeClock`: sleeping then moves
# the fake time forward at once and records each wait in `clock.slept`. We let a policy with 5
# tries fail 400 times against a dependency that is always down and look at the 4 waits of
# each call.

# %%
import random

from patterns.clock import FakeClock

BASE_DELAY, CALLS, RETRIES = 0.1, 400, 4


def always_down():
    raise ConnectionError("connection refused")


clock = FakeClock()
fake_time_retry = Retry(attempts=RETRIES + 1, base_delay=BASE_DELAY, clock=clock,
                        rng=random.Random(3))
for _ in range(CALLS):
    try:
        fake_time_retry.call(always_down)
    except ConnectionError:
        pass
ours = np.array(clock.slept).reshape(CALLS, RETRIES)  # row: one call; column: retry number n

caps = BASE_DELAY * 2 ** np.arange(RETRIES)
print("retry n:           ", list(range(RETRIES)))
print("cap (s):           ", caps.round(3).tolist())
print("mean wait (s):     ", ours.mean(axis=0).round(3).tolist())
print("fake time passed:  ", round(clock.monotonic(), 1), "s (real time: none)")

assert (ours >= 0).all() and (ours <= caps).all(), "a wait went beyond its cap"
for n in range(RETRIES):
    # Full jitter: uniform between 0 and the cap, so the mean is half the cap...
    assert abs(ours[:, n].mean() - caps[n] / 2) < 0.15 * caps[n] / 2, (n, ours[:, n].mean())
    # ...and the waits are spread out, not one fixed value.
    assert ours[:, n].std() > 0.2 * caps[n], (n, ours[:, n].std())
assert (np.diff(ours.mean(axis=0)) > 0).all(), "the waits should grow from retry to retry"

# %% [markdown]
# ## 5. The same policy with `tenacity`
#
# `tenacity` is the retry library most Python code uses. Its `wait_random_exponential` is the
# same full-jitter rule: before retry n it waits a random time in
# [0, min(max, multiplier · 2ⁿ)]. Here is the "backoff + jitter" policy in its words, first on
# the same flaky edge, then with its `sleep` swapped for a list so we can compare its waits
# with ours. (tenacity has no retry budget; that part stays ours.)

# %%
from tenacity import Retrying, retry, retry_if_exception_type, stop_after_attempt
from tenacity import wait_random_exponential

plain = ServiceClient("products", EDGE_URL, caller="notebook", read_timeout=1.0)  # no retry
tenacity_attempts = 0


@retry(stop=stop_after_attempt(3), wait=wait_random_exponential(multiplier=0.05, max=2),
       retry=retry_if_exception_type(ServiceUnavailable), reraise=True)
def fetch_product():
    global tenacity_attempts
    tenacity_attempts += 1
    return plain.request("GET", PRODUCT_PATH, headers=FRESH_CONNECTION)


TENACITY_REQUESTS = 30
succeeded = 0
edge.add_toxic(type="reset_peer", name="flaky", toxicity=0.3, attributes={"timeout": 0})
try:
    for _ in range(TENACITY_REQUESTS):
        try:
            fetch_product()
            succeeded += 1
        except ServiceUnavailable:
            pass
finally:
    edge.destroy_toxic("flaky")
plain.close()
tenacity_flaky = {"success rate": succeeded / TENACITY_REQUESTS,
                  "attempts per request": tenacity_attempts / TENACITY_REQUESTS}
print("tenacity on the flaky edge:", tenacity_flaky)
print("ours on the flaky edge:    ", {k: flaky["backoff + jitter"][k]
                                      for k in ("success rate", "attempts per request")})
assert tenacity_flaky["success rate"] >= 0.85
assert 1.0 < tenacity_flaky["attempts per request"] <= 3.0  # it retried, at most 3 tries each

# Their waits, with time faked the tenacity way: `sleep=` is where it waits.
tenacity_slept = []
always_down_retrying = Retrying(
    stop=stop_after_attempt(RETRIES + 1), sleep=tenacity_slept.append,
    wait=wait_random_exponential(multiplier=BASE_DELAY, max=2),
    retry=retry_if_exception_type(ConnectionError), reraise=True)
for _ in range(CALLS):
    try:
        always_down_retrying(always_down)
    except ConnectionError:
        pass
theirs = np.array(tenacity_slept).reshape(CALLS, RETRIES)
print("mean wait, ours (s):    ", ours.mean(axis=0).round(3).tolist())
print("mean wait, tenacity (s):", theirs.mean(axis=0).round(3).tolist())
assert (theirs <= caps).all()
for n in range(RETRIES):
    assert abs(theirs[:, n].mean() - ours[:, n].mean()) < 0.2 * caps[n] / 2, n

# %%
fig, ax = plt.subplots(figsize=(9, 4))
jitter = np.random.default_rng(0).uniform(-0.12, 0.12, size=CALLS)
for n in range(RETRIES):
    ax.scatter(n - 0.17 + jitter, ours[:, n], s=4, alpha=0.35, color="tab:green",
               label="patterns.retry" if n == 0 else None)
    ax.scatter(n + 0.17 + jitter, theirs[:, n], s=4, alpha=0.35, color="tab:purple",
               label="tenacity" if n == 0 else None)
    ax.hlines(caps[n], n - 0.35, n + 0.35, color="black")
    ax.hlines([ours[:, n].mean(), theirs[:, n].mean()], [n - 0.3, n + 0.05], [n - 0.05, n + 0.3],
              color=["darkgreen", "indigo"], linewidth=2.5)
ax.plot([], [], color="black", label="cap: 0.1 s · 2ⁿ")
ax.plot([], [], color="darkgreen", linewidth=2.5, label="mean")
ax.set_xticks(range(RETRIES), [f"before retry {n + 1}" for n in range(RETRIES)])
ax.set_ylabel("wait (s)")
ax.set_title(f"Exponential backoff with full jitter: {CALLS} failing calls, 4 waits each")
ax.legend(loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# Same rule, same spread: each wait is drawn anywhere between zero and a cap that doubles with
# every retry, so two clients that failed together come back at different moments.
# Try next: change `toxicity=0.3` to `0.6` in part 2 and watch the budget's success rate fall
# while its load stays flat; or give the budget `min_per_second=1` (the default) and see the
# outage load climb back up, since 10 requests are too few to hide the reserve's 10 retries.
#
# ## Leave the sandbox as we found it

# %%
lab.tidy()

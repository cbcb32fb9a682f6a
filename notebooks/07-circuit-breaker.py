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
# # 07 · The circuit breaker
#
# We cut payments off from orders and watch orders' breaker open and its orders fail fast.
# Then we build a breaker of our own on a private edge, slow the edge down, make it hang, and
# record the breaker going closed → open → half-open → closed while a caller without one waits
# out every timeout. `pybreaker` does the same beside it, and at the end the shop's breaker
# closes by itself. The code: [patterns/breaker.py](../patterns/breaker.py),
# [patterns/http.py](../patterns/http.py) and [patterns/service.py](../patterns/service.py).

# %%
from microlab.lab import Lab, wait_until
lab = Lab.connect()

# %% [markdown]
# ## 1. The shop's own breaker
#
# Orders calls payments through a `ServiceClient` with a circuit breaker: after 5 failures in
# a row it stops calling payments for 30 s (`recovery_timeout`) and fails at once instead.
# Every service shows its breakers at `GET /admin/breakers` (admin only). We cut the
# `orders->payments` edge and place two orders.

# %%
import time

admin = lab.admin()
shopper = lab.customer("Grace")
product = lab.in_stock(5)


def orders_breaker(peer: str = "payments") -> dict:
    """Orders' breaker for one peer, as its admin endpoint shows it."""
    answer = admin.get(f"{lab.urls['orders']}/admin/breakers", timeout=10)
    answer.raise_for_status()
    # A breaker is made on the first call to its peer: none yet means closed.
    return answer.json().get(peer, {"state": "closed", "failures": 0, "rejected": 0})


def place_order():
    start = time.monotonic()
    answer = shopper.post(f"{lab.gateway}/api/orders", timeout=30,
                          json={"items": [{"product_id": product["id"], "quantity": 1}]})
    return answer, time.monotonic() - start


stock_before = lab.stock(product["id"])["available"]
print("orders' breaker for payments, before:", orders_breaker()["state"])
assert orders_breaker()["state"] != "open", "left open by an earlier experiment: wait 30 s"
lab.chaos.cut("orders->payments")
try:
    first, first_s = place_order()
    after_first = orders_breaker()
    second, second_s = place_order()
    after_second = orders_breaker()
finally:
    lab.chaos.restore("orders->payments")

for answer, seconds in ((first, first_s), (second, second_s)):
    error = answer.json()["error"]
    print(f"{answer.status_code} in {seconds * 1000:4.0f} ms  order {error['order_id']}: "
          f"{error['message']}")
print("orders' breaker for payments:", {key: after_second[key] for key in
                                         ("state", "failures", "rejected", "retry_after")})

assert first.status_code == 503 and second.status_code == 503
assert first.json()["error"]["order_id"].startswith("ord_")
assert second.json()["error"]["order_id"].startswith("ord_")
assert after_first["state"] == "open", f"orders' breaker did not open: {after_first}"
# The second order never reached payments: the breaker refused the calls on the spot.
assert "circuit 'payments' is open" in second.json()["error"]["message"]
assert after_second["failures"] == after_first["failures"]
assert after_second["rejected"] > after_first["rejected"]
# The saga undid both orders: cancelled, stock released.
for answer in (first, second):
    order = shopper.get(f"{lab.gateway}/api/orders/{answer.json()['error']['order_id']}",
                        timeout=10).json()
    assert order["status"] == "cancelled", order
assert lab.stock(product["id"])["available"] == stock_before
# Orders itself is up and answering (503 is an answer): the gateway's breaker for orders
# does not count it, so the outage stops at orders instead of spreading to the gateway.
gateway_breakers = admin.get(f"{lab.gateway}/api/admin/breakers", timeout=10).json()
print("the gateway's breaker for orders:", gateway_breakers["orders"]["state"])
assert gateway_breakers["orders"]["state"] == "closed"

# %% [markdown]
# The edge is back, but orders' breaker stays open until its 30 s are up: it cannot know
# payments is fine without trying, and it tries only once the timeout has passed. Until then
# every order fails at once, without a call to payments. (A cut edge refuses connections, so
# even the first order failed quickly; had payments hung instead, each of those 5 calls would
# have waited its 5 s timeout — part 2 shows that case.) We come back to orders at the end; in
# the meantime, let us take a breaker apart.
#
# ## 2. A breaker of our own, on an edge of our own
#
# A private Toxiproxy proxy to products (deleted by `lab.tidy()`), and two clients of it with
# a 1 s read timeout: one behind a `CircuitBreaker` that opens after 3 failures in a row and
# tries again after 2 s, one with no breaker. A listener writes down every change of state.

# %%
import threading

import requests

from patterns.breaker import CircuitBreaker, CircuitOpenError, State
from patterns.http import ServiceClient, ServiceUnavailable

toxiproxy = lab.toxiproxy()
EDGE_NAME = "nb07-products"
if toxiproxy.get_proxy(EDGE_NAME):  # left over from an interrupted run
    toxiproxy.get_proxy(EDGE_NAME).destroy()
edge = toxiproxy.create(upstream=lab.urls["products"].removeprefix("http://"), name=EDGE_NAME)
EDGE_URL = f"http://{edge.listen}"
PRODUCT_PATH = f"/api/v1/products/{product['id']}"
assert requests.get(EDGE_URL + PRODUCT_PATH, timeout=5).status_code == 200

TIMEOUT_S, THRESHOLD, RECOVERY_S = 1.0, 3, 2.0
breaker = CircuitBreaker("products", failure_threshold=THRESHOLD, recovery_timeout=RECOVERY_S)
protected = ServiceClient("products", EDGE_URL, caller="notebook", read_timeout=TIMEOUT_S,
                          breaker=breaker)
unprotected = ServiceClient("products", EDGE_URL, caller="notebook", read_timeout=TIMEOUT_S)

t0 = time.monotonic()
transitions = []  # (seconds since t0, old state, new state)
breaker.on_state_change(lambda b, old, new: transitions.append((time.monotonic() - t0, old, new)))

# %% [markdown]
# The experiment, in four phases; the protected client calls every 100 ms throughout:
#
# 1. **healthy** for 1 s;
# 2. **slow**: a 300 ms `latency` toxic — slower, but inside the timeout;
# 3. **hanging**: a `timeout` toxic with `timeout: 0` holds every answer forever, so each call
#    waits out its 1 s timeout. The unprotected client calls beside it, in a thread. The phase
#    lasts until the breaker has opened, tried once (half-open), failed, and opened again;
# 4. **recovered**: the toxic is gone; we keep calling until the breaker has closed.

# %%
calls = []  # protected: (start, seconds, outcome)
unprotected_calls = []
phases = []  # (name, start, end)


def call_once(client, log):
    start = time.monotonic()
    try:
        client.get_json(PRODUCT_PATH)
        outcome = "ok"
    except CircuitOpenError:
        outcome = "rejected"  # the breaker said no without calling
    except ServiceUnavailable as error:
        outcome = error.reason  # ReadTimeout, ConnectionError
    log.append((start - t0, time.monotonic() - start, outcome))


def phase(name, seconds, done=lambda: False):
    """Call every 100 ms for `seconds`, or until `done()`."""
    start = time.monotonic()
    while not done() and time.monotonic() - start < seconds:
        call_once(protected, calls)
        time.sleep(0.1)
    phases.append((name, start - t0, time.monotonic() - t0))


def states_seen():
    return [new for _, _, new in transitions]


stop_unprotected = threading.Event()


def call_unprotected():
    while not stop_unprotected.is_set():
        call_once(unprotected, unprotected_calls)
        time.sleep(0.1)


unprotected_thread = threading.Thread(target=call_unprotected, daemon=True)
try:
    phase("healthy", 1.0)
    edge.add_toxic(type="latency", name="slow", attributes={"latency": 300})
    phase("slow", 1.5)
    edge.destroy_toxic("slow")
    edge.add_toxic(type="timeout", name="hang", attributes={"timeout": 0})
    unprotected_thread.start()
    phase("hanging", 15.0,
          done=lambda: states_seen()[:3] == [State.OPEN, State.HALF_OPEN, State.OPEN])
    stop_unprotected.set()
    unprotected_thread.join(timeout=5)
    edge.destroy_toxic("hang")
    hang_removed = time.monotonic() - t0
    phase("recovered", 8.0, done=lambda: states_seen()[-1:] == [State.CLOSED])
    phase("recovered", 0.5)
finally:
    stop_unprotected.set()
    for name in edge.toxics():
        edge.destroy_toxic(name)

for at, old, new in transitions:
    print(f"{at:5.2f} s  {old:>9} -> {new}")

# %% [markdown]
# Every claim of the story, checked: the slow phase did not trip the breaker (slowness inside
# the timeout is not a failure); it opened after exactly 3 timeouts; it waited its 2 s before a
# trial; the trial during the outage failed and opened it again; the trial after the outage
# closed it.

# %%
def calls_in(name, log=calls):
    spans = [(start, end) for phase_name, start, end in phases if phase_name == name]
    return [call for call in log if any(start <= call[0] < end for start, end in spans)]


assert [(old, new) for _, old, new in transitions] == [
    (State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.OPEN),
    (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)], transitions
slow = calls_in("slow")
assert slow and all(outcome == "ok" and seconds >= 0.25 for _, seconds, outcome in slow)
opened_at = transitions[0][0]
before_open = [call for call in calls_in("hanging") if call[0] < opened_at]
assert [outcome for _, _, outcome in before_open] == ["ReadTimeout"] * THRESHOLD, before_open
assert all(seconds >= 0.9 * TIMEOUT_S for _, seconds, _ in before_open)
for (t_open, _, _), (t_half, _, _) in ((transitions[0], transitions[1]),
                                        (transitions[2], transitions[3])):
    assert t_half - t_open >= 0.95 * RECOVERY_S, "half-open came before the recovery timeout"
assert transitions[2][0] < hang_removed < transitions[4][0]  # reopened during, closed after
assert calls[-1][2] == "ok" and breaker.state is State.CLOSED

# %%
import matplotlib.pyplot as plt
import numpy as np

LEVEL = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}
end = calls[-1][0] + calls[-1][1]
times = [0.0] + [at for at, _, _ in transitions] + [end]
levels = [0] + [LEVEL[new] for _, _, new in transitions] + [LEVEL[transitions[-1][2]]]
shading = {"slow": ("gold", "300 ms latency"), "hanging": ("tab:red", "hanging (timeout toxic)")}

fig, (state_ax, time_ax) = plt.subplots(2, 1, figsize=(11, 6), sharex=True,
                                        gridspec_kw={"height_ratios": [1, 1.4]})
for ax in (state_ax, time_ax):
    for name, start, stop in phases:
        if name in shading:
            ax.axvspan(start, stop if name == "slow" else hang_removed, color=shading[name][0],
                       alpha=0.2, label=shading[name][1] if ax is state_ax else None)
state_ax.step(times, levels, where="post", color="black", linewidth=2)
state_ax.set_yticks([0, 1, 2], ["closed", "half-open", "open"])
state_ax.set_ylim(-0.4, 2.4)
state_ax.set_title("Our breaker's state while its dependency slows down, hangs and recovers")
state_ax.legend(loc="upper left")

style = {"ok": ("tab:green", "o", "answered"), "ReadTimeout": ("tab:red", "x", "timed out"),
         "rejected": ("tab:blue", ".", "rejected by the open breaker")}
for outcome, (color, marker, label) in style.items():
    picked = [(start, seconds) for start, seconds, got in calls if got == outcome]
    if picked:
        time_ax.scatter(*zip(*picked), color=color, marker=marker, label=f"protected: {label}")
picked = [(start, seconds) for start, seconds, _ in unprotected_calls]
time_ax.scatter(*zip(*picked), facecolors="none", edgecolors="purple", marker="s", s=60,
                label="unprotected: timed out")
time_ax.axhline(TIMEOUT_S, color="grey", linestyle="--", linewidth=1)
time_ax.set_yscale("log")
time_ax.set_ylabel("call duration (s, log)")
time_ax.set_xlabel("seconds since the experiment began")
time_ax.legend(loc="lower left", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Failing fast
#
# While the breaker was open, the protected client got its answer — "no" — in microseconds,
# and its thread was free for other work. The unprotected client, on the same edge at the same
# time, spent a full timeout on every call. Multiply by the hundreds of requests a busy service
# has in flight and that is the difference between a service that degrades and one whose
# threads all hang on a dependency.

# %%
rejected = [seconds for _, seconds, outcome in calls if outcome == "rejected"]
waited = [seconds for _, seconds, outcome in unprotected_calls]
print(f"breaker open: {len(rejected)} calls, best {min(rejected) * 1000:.3f} ms, "
      f"median {np.median(rejected) * 1000:.3f} ms")
print(f"no breaker:   {len(waited)} calls, best {min(waited):.2f} s, "
      f"median {np.median(waited):.2f} s")

assert len(rejected) >= 5 and min(rejected) < 0.050 and np.median(rejected) < 0.050
assert len(waited) >= 3 and all(seconds >= 0.9 * TIMEOUT_S for seconds in waited)
assert all(outcome == "ReadTimeout" for _, _, outcome in unprotected_calls)
protected.close()
unprotected.close()

fig, ax = plt.subplots(figsize=(7, 3.5))
bars = ax.bar(["breaker open\n(rejected at once)", "no breaker\n(waits its timeout)"],
              [np.median(rejected), np.median(waited)], color=["tab:blue", "purple"])
ax.bar_label(bars, labels=[f"{np.median(rejected) * 1000:.2f} ms", f"{np.median(waited):.2f} s"])
ax.axhline(TIMEOUT_S, color="grey", linestyle="--", label=f"read timeout {TIMEOUT_S:.0f} s")
ax.set_yscale("log")
ax.set_ylabel("median call duration (s, log)")
ax.set_title("The same hanging dependency, with and without a breaker")
ax.set_ylim(top=5)
ax.legend(loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# Try next: set `THRESHOLD = 1` or `RECOVERY_S = 5` in part 2 and run from there. A lower
# threshold opens on a single blip; a longer recovery spares the dependency more but keeps
# callers failing longer after it is back. The shop's services use 5 and 30 s
# (`BREAKER_FAILURE_THRESHOLD`, `BREAKER_RECOVERY_TIMEOUT`).
#
# ## 4. `pybreaker` beside ours
#
# `pybreaker` is a widely used breaker for Python. With the same settings (`fail_max=3`,
# `reset_timeout=2`) both should let exactly 3 calls through to a dead edge, then refuse the
# rest without calling, then close again after a successful trial. Two small differences:
# pybreaker raises `CircuitBreakerError` already on the call that trips it (ours re-raises the
# real error), and it counts only failures in a row, where ours can also open on an error rate
# (`error_rate_threshold` over `window`).

# %%
import pybreaker

ours = CircuitBreaker("products", failure_threshold=3, recovery_timeout=2.0)
theirs = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=2, name="products")
reached_edge = {"ours": 0, "pybreaker": 0}


def fetch_with(who):
    def fetch():
        reached_edge[who] += 1
        return requests.get(EDGE_URL + PRODUCT_PATH, timeout=TIMEOUT_S).json()
    return fetch


def try_call(who, call):
    start = time.monotonic()
    try:
        call()
        outcome = "ok"
    except (CircuitOpenError, pybreaker.CircuitBreakerError):
        outcome = "refused by the breaker"
    except requests.RequestException:
        outcome = "failed on the wire"
    return outcome, time.monotonic() - start


results = {"ours": [], "pybreaker": []}
with edge.down():  # connections refused; toxiproxy-python brings the edge back up after
    for _ in range(6):
        results["ours"].append(try_call("ours", lambda: ours.call(fetch_with("ours"))))
        results["pybreaker"].append(
            try_call("pybreaker", lambda: theirs.call(fetch_with("pybreaker"))))
    open_states = {"ours": str(ours.state), "pybreaker": theirs.current_state}

for who, outcomes in results.items():
    print(f"{who:<10} reached the edge {reached_edge[who]} times; "
          + ", ".join(outcome for outcome, _ in outcomes))
print("states with the edge down:", open_states)

assert reached_edge == {"ours": 3, "pybreaker": 3}, reached_edge
assert open_states == {"ours": "open", "pybreaker": "open"}
for who, outcomes in results.items():
    refused = [seconds for outcome, seconds in outcomes[3:]]
    assert all(outcome == "refused by the breaker" for outcome, _ in outcomes[3:]), who
    assert min(refused) < 0.050, who

time.sleep(2.1)  # both recovery timeouts pass; the edge is up again
after = {"ours": try_call("ours", lambda: ours.call(fetch_with("ours")))[0],
         "pybreaker": try_call("pybreaker", lambda: theirs.call(fetch_with("pybreaker")))[0]}
closed_states = {"ours": str(ours.state), "pybreaker": theirs.current_state}
print("a trial after 2 s:", after, "->", closed_states)
assert after == {"ours": "ok", "pybreaker": "ok"}
assert closed_states == {"ours": "closed", "pybreaker": "closed"}

# %% [markdown]
# ## 5. Back to the shop: its breaker closes by itself
#
# Orders' breaker for payments opened in part 1 with a 30 s recovery timeout. Once that has
# passed it turns half-open; the next order's charge is the trial, and when payments answers,
# the breaker closes and orders are confirmed again. (Only the gateway has an admin route to
# reset a breaker by hand, `POST /api/admin/breakers/<name>/reset`; orders' breakers reset
# themselves this way.)

# %%
waiting = orders_breaker()
print(f"orders' breaker for payments: {waiting['state']}, next trial in "
      f"{waiting['retry_after']:.1f} s")
wait_until(lambda: orders_breaker()["state"] == "half_open",
           timeout=waiting["retry_after"] + 5, every=0.5, what="orders' payments breaker half-open")
confirmed, confirmed_s = place_order()
closed_again = orders_breaker()
print(f"{confirmed.status_code} in {confirmed_s * 1000:.0f} ms: order {confirmed.json().get('id')} "
      f"{confirmed.json().get('status')}; breaker {closed_again['state']}")
assert confirmed.status_code == 201 and confirmed.json()["status"] == "confirmed"
assert closed_again["state"] == "closed"
assert lab.stock(product["id"])["available"] == stock_before - 1

# %% [markdown]
# ## Leave the sandbox as we found it

# %%
lab.tidy()

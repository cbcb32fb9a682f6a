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
# # 08 · Distributed tracing
#
# One click on "buy" sets off work in half the shop: the gateway, orders, products, inventory
# and payments over HTTP, then notifications and email over RabbitMQ. In this notebook you place
# one order, gather every piece of work it caused into one *trace*, draw it as a waterfall, and
# then slow down one hop and find it from the trace alone, without reading a single log.
#
# The tracing is [patterns/tracing.py](../patterns/tracing.py) (OpenTelemetry, spans written as
# JSON lines); the trace context rides on every call and message through `outgoing_context` in
# [patterns/service.py](../patterns/service.py), and across the outbox in
# [patterns/outbox.py](../patterns/outbox.py).

# %%
import secrets
import time
from urllib.parse import urlsplit

import matplotlib.pyplot as plt
import requests
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from microlab.lab import Lab, wait_until
from patterns.tracing import span_tree, waterfall

lab = Lab.connect()
customer = lab.customer("Grace")
product = lab.in_stock(5)
print("buying:", product["name"])

# %% [markdown]
# ## Starting the trace ourselves
#
# A trace is identified by a 16-byte *trace id*; each piece of work in it, a *span*, has an
# 8-byte span id and remembers its parent's. Between processes the context travels in the W3C
# `traceparent` header: `00-<trace id>-<parent span id>-01` (version, the two ids, and the flag
# "sampled": keep this trace).
#
# The gateway carries on any trace it is handed. So instead of searching the spans for "the one
# that looks like ours", we make up a trace id, send it, and know which trace is ours. (A gateway
# open to the internet may prefer to start a fresh trace for strangers; ours trusts its callers.)

# %%
def place_order(session: requests.Session, product_id: str) -> tuple[dict, str, str]:
    """Place an order inside a trace of our own; returns the order, the trace id and the span
    id we named as the parent of the gateway's first span."""
    trace_id, our_span_id = secrets.token_hex(16), secrets.token_hex(8)
    answer = session.post(f"{lab.gateway}/api/orders", timeout=30,
                          json={"items": [{"product_id": product_id, "quantity": 1}]},
                          headers={"traceparent": f"00-{trace_id}-{our_span_id}-01"})
    assert answer.status_code == 201, answer.text
    return answer.json(), trace_id, our_span_id


order, trace_id, our_span_id = place_order(customer, product["id"])
print(order["id"], order["status"], "· trace", trace_id)
assert order["status"] == "confirmed"

# %% [markdown]
# ## Collecting the spans
#
# Every service appends each span it finishes to one JSON-lines file (`lab.spans()` reads it).
# The HTTP part of the order is over when the gateway answers, but the events it caused leave a
# little later: each service's outbox relay publishes them on its next pass (every 0.5 s), and
# their consumers add spans of their own. So we wait until the trace has stopped growing.

# %%
def settled_trace(trace_id: str, quiet_for: float = 1.0, timeout: float = 15.0) -> list[dict]:
    """The spans of `trace_id`, once no new one has arrived for `quiet_for` seconds."""
    seen = {"count": -1, "since": time.monotonic()}

    def quiet() -> list[dict] | None:
        spans = [span for span in lab.spans() if span["trace_id"] == trace_id]
        if len(spans) != seen["count"]:
            seen.update(count=len(spans), since=time.monotonic())
        elif spans and time.monotonic() - seen["since"] >= quiet_for:
            return spans
        return None

    return wait_until(quiet, timeout, every=0.25, what=f"trace {trace_id} to stop growing")


spans = settled_trace(trace_id)
by_id = {span["span_id"]: span for span in spans}
print(waterfall(spans))

# %% [markdown]
# Each line is one span: which service did the work, what it was (the route served, an HTTP
# call made — `POST`, `GET` — a message sent, received, processed), when it started and how
# long it took. One span as it is stored:

# %%
commit = next(span for span in spans if span["service"] == "inventory"
              and span["kind"] == "server" and span["name"].endswith("/commit"))
print({key: commit[key] for key in ("trace_id", "span_id", "parent_id", "service", "name",
                                    "kind", "duration_ms", "status")})
print("http.target:", commit["attributes"]["http.target"])

# %% [markdown]
# ## One trace, with every link intact
#
# What makes this a *distributed* trace is that the pieces written by different processes
# point at each other. We check that:
#
# - it is really *our order's* trace: the stock reservation it committed (its id is in the
#   order) appears in no other trace;
# - gateway, orders, inventory and payments all worked in it;
# - there is one root, the gateway's span, whose parent is the span id we sent; every other
#   span's parent is in the trace;
# - each service's request span hangs under a *client* span of its caller, in another process;
# - the events crossed RabbitMQ inside the trace: orders' outbox relay published
#   `order.created` under the order request's span, and inventory processed it under that.

# %%
def ancestors(span: dict, spans_by_id: dict[str, dict]) -> list[dict]:
    chain = []
    while span["parent_id"] in spans_by_id:
        span = spans_by_id[span["parent_id"]]
        chain.append(span)
    return chain


reservation = order["reservation_id"]
traces_with_it = {span["trace_id"] for span in lab.spans()
                  if reservation in span["attributes"].get("http.target", "")}
assert traces_with_it == {trace_id}, traces_with_it

services = {span["service"] for span in spans}
print("services:", ", ".join(sorted(services)))
assert services >= {"gateway", "orders", "inventory", "payments"}, services

roots = [span for span in spans if span["parent_id"] not in by_id]
assert len(roots) == 1, [(span["service"], span["name"]) for span in roots]
root = roots[0]
assert (root["service"], root["kind"], root["parent_id"]) == ("gateway", "server", our_span_id)
assert all(ancestors(span, by_id)[-1] is root for span in spans if span is not root)

hops = set()
for span in spans:
    if span["kind"] == "server" and span is not root:
        caller = by_id[span["parent_id"]]
        assert caller["kind"] == "client" and caller["service"] != span["service"], span
        hops.add(f"{caller['service']}->{span['service']}")
print("HTTP hops:", ", ".join(sorted(hops)))
assert {"gateway->orders", "orders->inventory", "orders->payments"} <= hops

processed = [span for span in spans if span["service"] == "inventory"
             and span["name"] == "order.created process"]
assert processed, "inventory's handling of order.created is not in the order's trace"
chain = [(span["service"], span["kind"], span["name"]) for span in ancestors(processed[0], by_id)]
print("order.created process <-", chain[:4])
assert [kind for _service, kind, _name in chain[:3]] == ["producer", "producer", "server"]
assert chain[1][2] == "relay order.created" and chain[2][:2] == ("orders", "server")
assert all(span["status"] != "error" for span in spans)

# %% [markdown]
# Look at the start times of the `relay …` spans in the text waterfall: most of them begin
# *after* the gateway had already answered. The customer did not wait for the events to be
# published; the outbox let the request finish first. A trace shows that delay as plainly as it
# shows a slow call.

# %%
late = [span for span in spans if span["name"].startswith("relay ")
        and span["start_ns"] > root["end_ns"]]
for span in late:
    print(f"{span['service']:<9} {span['name']:<26} "
          f"{(span['start_ns'] - root['end_ns']) / 1e6:6.1f} ms after the answer")
assert late

# %% [markdown]
# ## The waterfall as a picture
#
# The same spans drawn on one time line: a bar per span, indented under its parent, coloured by
# the service that did the work. For an HTTP call we name the service it called.

# %%
SERVICE_COLOURS = {name: plt.cm.tab10(index) for index, name in enumerate(lab.topology.services)}


def span_label(span: dict, spans_by_id: dict[str, dict]) -> str:
    if span["kind"] == "client":
        callees = [child["service"] for child in spans_by_id.values()
                   if child["parent_id"] == span["span_id"]]
        target = callees[0] if callees else urlsplit(span["attributes"]["http.url"]).netloc
        return f"{span['name']} → {target}"
    destination = span["attributes"].get("messaging.destination")
    if destination and span["name"].endswith((" send", " receive")):
        exchange = destination.removeprefix(f"{lab.namespace}.") if lab.namespace else destination
        verb = "send to" if span["name"].endswith(" send") else "receive from"
        return f"{verb} exchange {exchange}"
    return span["name"]


def plot_waterfall(spans: list[dict], title: str, highlight: frozenset[str] = frozenset()) -> None:
    rows = span_tree(spans)
    spans_by_id = {span["span_id"]: span for span in spans}
    begin = min(span["start_ns"] for span in spans)
    fig, ax = plt.subplots(figsize=(12, 0.24 * len(rows) + 1.2))
    labels = blended_transform_factory(ax.transAxes, ax.transData)
    for row, (depth, span) in enumerate(rows):
        start = (span["start_ns"] - begin) / 1e6
        marked = span["span_id"] in highlight
        ax.barh(row, max(span["duration_ms"], 0.5), left=start, height=0.7,
                color=SERVICE_COLOURS.get(span["service"], "grey"),
                edgecolor="red" if marked else "none", linewidth=2.5 if marked else 0)
        ax.text(-0.56 + 0.018 * depth, row, span_label(span, spans_by_id), transform=labels,
                va="center", fontsize=8, color="red" if marked else "black")
        if marked:
            ax.text(start + span["duration_ms"], row, f"  {span['duration_ms']:.0f} ms",
                    va="center", color="red", fontsize=9)
    ax.set_yticks([])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("milliseconds since the trace began")
    ax.set_title(title)
    present = [name for name in SERVICE_COLOURS if any(s["service"] == name for s in spans)]
    ax.legend(handles=[Patch(color=SERVICE_COLOURS[name], label=name) for name in present],
              loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="service")
    fig.subplots_adjust(left=0.36, right=0.86)
    plt.show()


plot_waterfall(spans, f"One order, one trace: {len(spans)} spans in {len(services)} services")

# %% [markdown]
# ## Finding a slow hop
#
# Now we add 300 ms of latency to every answer on the `orders->inventory` edge (in its chaos
# proxy: neither service knows) and place another order. The customer waits longer; the
# question a trace answers is *where* the time went.
#
# A span's duration includes its children's. What a span spent *itself* — its **self time** —
# is its duration minus the time covered by its children. A server span with a large self time
# is slow code (or a slow query); a client span with a large self time is time on the wire
# between two services, which neither service's own logs can see.

# %%
def self_time_ms(span: dict, spans: list[dict]) -> float:
    """Duration minus the union of the children's time inside it."""
    inside = sorted((max(child["start_ns"], span["start_ns"]), min(child["end_ns"], span["end_ns"]))
                    for child in spans if child["parent_id"] == span["span_id"])
    covered, reach = 0, span["start_ns"]
    for start, end in inside:
        start = max(start, reach)
        if end > start:
            covered += end - start
            reach = end
    return (span["end_ns"] - span["start_ns"] - covered) / 1e6


lab.chaos.add_latency("orders->inventory", 300)
try:
    slow_order, slow_trace_id, _ = place_order(customer, product["id"])
finally:  # remove just our toxic, whatever happened
    requests.delete(f"{lab.urls['chaos']}/proxies/orders_to_inventory/toxics/latency_downstream",
                    timeout=10).raise_for_status()
assert slow_order["status"] == "confirmed"
assert all(not edge.toxics for edge in lab.chaos.edges() if edge.edge == "orders->inventory")

slow_spans = settled_trace(slow_trace_id)
slow_by_id = {span["span_id"]: span for span in slow_spans}
ranked = sorted(slow_spans, key=lambda span: self_time_ms(span, slow_spans), reverse=True)
print(f"{'self ms':>8} {'total ms':>9}  service   span")
for span in ranked[:5]:
    print(f"{self_time_ms(span, slow_spans):8.1f} {span['duration_ms']:9.1f}  "
          f"{span['service']:<9} {span_label(span, slow_by_id)}")

# %% [markdown]
# The top of that list is the slowed hop, found from the spans alone: a client span in orders
# whose child is inventory's request span, long while the inventory work inside it is short.
# Both calls the saga makes to inventory (reserve, then commit) paid the 300 ms.

# %%
def calls_to_inventory(trace_spans: list[dict]) -> list[dict]:
    """The client spans in orders whose child is a request span of inventory."""
    ids = {span["span_id"]: span for span in trace_spans}
    return [ids[span["parent_id"]] for span in trace_spans
            if span["service"] == "inventory" and span["kind"] == "server"
            and ids.get(span["parent_id"], {}).get("service") == "orders"]


slowest = ranked[0]
callee = [span["service"] for span in slow_spans if span["parent_id"] == slowest["span_id"]]
assert (slowest["service"], slowest["kind"], callee) == ("orders", "client", ["inventory"]), \
    (slowest["service"], slowest["kind"], callee)
assert slowest["duration_ms"] >= 300, slowest["duration_ms"]

slow_calls = calls_to_inventory(slow_spans)
before = sorted(span["duration_ms"] for span in calls_to_inventory(spans))
after = sorted(span["duration_ms"] for span in slow_calls)
print("orders->inventory calls before:", before, "ms; with the latency:", after, "ms")
assert len(after) == 2 and min(after) >= 300 and max(before) < min(after)
# The two largest self times are exactly those two calls.
assert {span["span_id"] for span in ranked[:2]} == {span["span_id"] for span in slow_calls}

# %%
plot_waterfall(slow_spans, "300 ms added on orders->inventory: the slow spans stand out",
               highlight=frozenset(span["span_id"] for span in slow_calls))

# %% [markdown]
# ## Try it yourself
#
# - Move the latency to `orders->payments`, or put 50 ms on `inventory->mongo`: then it is
#   inventory's own request span that grows, not the orders client span around it — the time
#   is spent inside inventory.
# - Add `jitter_ms=200` to `add_latency` and place a few orders: each trace blames the same hop,
#   by a different amount.
# - Cut `orders->payments` with `lab.chaos.cut(...)` (and `restore` it): the failed call is
#   marked ✗ in the waterfall, and the compensation that released the stock is in the trace.

# %% [markdown]
# ## Leave the sandbox as we found it

# %%
lab.tidy()

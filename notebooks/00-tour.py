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
# # 00 · A tour of the shop
#
# Our shop is not one program but nine small ones, each with one job, talking over the network.
# In this notebook you draw the map of who talks to whom, look at the processes running on your
# machine, and switch one of them off to see that the rest of the shop carries on without it.
#
# The map lives in one file, [microlab/topology.toml](../microlab/topology.toml); the supervisor
# that starts everything is [microlab/supervisor.py](../microlab/supervisor.py).

# %%
import time

import matplotlib.pyplot as plt
import requests

from microlab.lab import Lab, wait_until

lab = Lab.connect()
topology = lab.topology
print("gateway:", lab.gateway)

# %% [markdown]
# ## The map
#
# Each service says which infrastructure it *uses* (MongoDB, RabbitMQ) and which services it
# *calls* over HTTP. Every such line is an **edge**. Customers only ever talk to the gateway at the
# top; the gateway talks to the services; the services keep their data in MongoDB and announce
# what happened through RabbitMQ.

# %%
layers = [
    ["gateway"],
    ["orders", "email"],
    ["users", "products", "inventory", "payments", "notifications"],
    ["registry", "mongo", "rabbitmq"],
]
position = {name: (column - (len(row) - 1) / 2, -depth)
            for depth, row in enumerate(layers) for column, name in enumerate(row)}
edges = topology.edges()
# A service added to topology.toml but not to the drawing would be a hole in the map.
assert set(position) == {*topology.services, "mongo", "rabbitmq"}, set(position) ^ {
    *topology.services, "mongo", "rabbitmq"}

fig, ax = plt.subplots(figsize=(11, 6))
for edge in edges:
    (x1, y1), (x2, y2) = position[edge.caller], position[edge.callee]
    infrastructure = edge.callee in topology.infrastructure
    ax.annotate("", xy=(x2, y2 + 0.08), xytext=(x1, y1 - 0.08),
                arrowprops=dict(arrowstyle="->", alpha=0.35 if infrastructure else 0.8,
                                color="grey" if infrastructure else "tab:blue",
                                linestyle="--" if infrastructure else "-"))
for name, (x, y) in position.items():
    colour = "tab:orange" if name in topology.infrastructure else "tab:blue"
    ax.text(x, y, name, ha="center", va="center", fontsize=10, color="white",
            bbox=dict(boxstyle="round", facecolor=colour))
ax.set_xlim(-3, 3)
ax.set_ylim(-3.4, 0.4)
ax.axis("off")
ax.set_title(f"{len(topology.services)} services, {len(edges)} edges "
             "(blue: HTTP calls, grey: database and broker)")
plt.show()

# %% [markdown]
# Every edge on that picture runs through a proxy of a Toxiproxy server (our own, compatible
# one in local mode). That is what lets later notebooks slow down or cut any single arrow. The
# proxies the chaos server knows are exactly the edges of the map:

# %%
proxied = {state.edge for state in lab.chaos.edges()}
drawn = {edge.name for edge in edges}
print(sorted(proxied)[:6], "...")
assert drawn <= proxied, f"edges without a proxy: {drawn - proxied}"

# %% [markdown]
# ## What is running
#
# `microlab status` asks the supervisor about every process it started: its pid, its port,
# whether its `/health` answers, how long it has been up and how much memory it uses.

# %%
lab.microlab("status")
rows = {row["service"]: row for row in lab.status()["services"]}
for name in topology.services:
    assert rows[name]["state"] == "running" and rows[name]["health"] == "ok", rows[name]

# %% [markdown]
# ## Switch one service off
#
# A customer places an order while the **email** service is stopped. In a single program, a
# broken email module could take the checkout down with it. Here email is a separate process
# that only *listens* for events, so the order goes through; the other services keep answering.

# %%
customer = lab.customer("Grace")
product = lab.in_stock(5)
lab.stop("email")

order = customer.post(f"{lab.gateway}/api/orders", timeout=30,
                      json={"items": [{"product_id": product["id"], "quantity": 1}]})
print(order.status_code, order.json()["status"])
assert order.status_code == 201 and order.json()["status"] == "confirmed"

for name in topology.services:
    if name != "email":
        health = requests.get(f"{lab.urls[name]}/health", timeout=5)
        assert health.status_code == 200, f"{name} stopped answering: {health.text}"

overview = requests.get(f"{lab.gateway}/api/health", timeout=10).json()
print(overview)
assert overview["services"]["email"] != "ok"

# %% [markdown]
# The gateway's `/api/health` names the one part that is missing. Now start email again. The
# `order.confirmed` event waited for it in its RabbitMQ queue, so the receipt is written *after*
# the order — nothing was lost while email was away.

# %%
began = time.monotonic()
lab.start("email")


def receipt() -> dict | None:
    emails = customer.get(f"{lab.gateway}/api/emails", timeout=10).json()["items"]
    return next((email for email in emails if order.json()["id"] in email["body"]), None)


email = wait_until(receipt, timeout=30, what="the receipt email")
print(f"receipt after {time.monotonic() - began:.1f} s: {email['subject']!r}")

# %% [markdown]
# ## Leave the sandbox as we found it
#
# Every notebook ends like this: stopped services started again, faults removed.

# %%
lab.tidy()

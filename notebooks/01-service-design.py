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
# # 01 · Designing services: who owns what
#
# Splitting a system into services is mostly deciding **boundaries**: each service owns one
# part of the business (a *bounded context*), keeps the data of that part to itself, and tells
# the others what happened through events. Here you read those boundaries off the running shop:
# which database belongs to whom, and which events cross from one service to another.
#
# The boundaries are declared in [microlab/topology.toml](../microlab/topology.toml); the events
# each service publishes are in its `events.py` (for example
# [services/orders/events.py](../services/orders/events.py)); the bus is
# [patterns/bus.py](../patterns/bus.py).

# %%
import json
import os
import shutil
import subprocess
from collections import defaultdict
from urllib.parse import urlsplit

import pika
import pymongo
import requests
from IPython.display import Markdown, display

from microlab.lab import Lab, wait_until
from patterns.bus import Bus

lab = Lab.connect()
services = lab.topology.services


def table(header: list[str], rows: list[list]) -> None:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    display(Markdown("\n".join(lines)))


# %% [markdown]
# ## One job each
#
# Each service has one responsibility, stated in a line. If you need "and" twice to say what a
# service does, it is probably two services — or a part of another one.

# %%
table(["service", "its job", "calls over HTTP"],
      [[name, service.description, ", ".join(c for c in service.calls if c != "registry") or "–"]
       for name, service in services.items()])

# %% [markdown]
# ## A database per service
#
# Every service that keeps data has a database of its own in MongoDB, and only that service
# connects to it. Nobody joins across them: orders does not read the users' collection to find
# an email address, it asks the users service. That is what lets a team change its schema, or
# its whole database, without a meeting with every other team.

# %%
mongo = pymongo.MongoClient(lab.urls["mongo"], serverSelectionTimeoutMS=5000)
databases = {name: sorted(mongo[name].list_collection_names())
             for name in mongo.list_database_names() if name not in ("admin", "config", "local")}
table(["database", "collections"], [[name, ", ".join(found)] for name, found in databases.items()])

keeping_data = {name for name, service in services.items() if "mongo" in service.uses}
assert set(databases) <= set(services), f"a database no service owns: {set(databases) - set(services)}"
assert keeping_data <= set(databases), f"services without their database: {keeping_data - set(databases)}"

# %% [markdown]
# ## Events cross the boundaries
#
# Each service publishes what happened in its own context on its own *topic exchange* in
# RabbitMQ: `users` announces `user.registered`, `orders` announces `order.confirmed`, and so on.
# Other services bind queues to the events they care about. The publisher does not know, or wait
# for, its listeners.
#
# Let us listen to everything for a moment: a queue of our own, bound to every exchange with the
# wildcard `#`, while a customer signs up and buys something.

# %%
bus = Bus(lab.urls["rabbitmq"], namespace=lab.namespace)
heard: list[tuple[str, str, dict]] = []
WATCH = "lab01.watch"
EXPECTED = {"user.registered", "order.created", "stock.reserved", "payment.captured",
            "order.confirmed"}
exchanges = [name for name in services if name not in ("gateway", "registry")]
try:
    with bus.consumer(WATCH, lambda message: heard.append(
            (message.exchange, message.routing_key, message.body)),
            *[(exchange, "#") for exchange in exchanges]):
        customer = lab.customer("Barbara")
        product = lab.in_stock(3)
        order = customer.post(f"{lab.gateway}/api/orders", timeout=30,
                              json={"items": [{"product_id": product["id"], "quantity": 1}]})
        assert order.status_code == 201, order.text
        order_id = order.json()["id"]
        # Each service's events leave through its own outbox relay, so they arrive in no
        # particular order: wait for all of them.
        wait_until(lambda: EXPECTED <= {key for _, key, body in heard
                                        if order_id in body.values()
                                        or customer.user["id"] in body.values()},
                   timeout=20, what=f"all of {sorted(EXPECTED)} on the bus")
finally:
    bus.close()

ours = [(exchange, key) for exchange, key, body in heard
        if order_id in body.values() or customer.user["id"] in body.values()]
for exchange, key in dict.fromkeys(ours):
    print(f"{exchange:>10} → {key}")
assert EXPECTED <= {key for _, key in ours}

# %% [markdown]
# Every event came from the exchange of the service that owns that fact — only users says a user
# registered, only payments says money was captured:

# %%
owner_of = {"user": "users", "product": "products", "stock": "inventory", "payment": "payments",
            "order": "orders"}
for exchange, key in ours:
    assert owner_of[key.split(".")[0]] == exchange, f"{key} published on {exchange}"

# %% [markdown]
# ## Who listens to what
#
# The broker knows every binding: which queue receives which events from which exchange. A
# queue's name starts with the service that consumes it (`email.events`, `inventory.orders`).
# This is the sandbox's own namespace on the broker, read with `rabbitmqctl` (or the management
# API where RabbitMQ runs in a container).

# %%
def bindings() -> list[tuple[str, str, str]]:
    """(exchange, queue, routing key) of every binding in this sandbox's namespace."""
    if shutil.which("rabbitmqctl"):
        listed = subprocess.run(["rabbitmqctl", "list_bindings", "--quiet", "--no-table-headers",
                                 "source_name", "destination_name", "routing_key"],
                                capture_output=True, text=True, timeout=60, check=True)
        rows = [line.split("\t") for line in listed.stdout.splitlines() if line.count("\t") == 2]
    else:
        amqp = urlsplit(lab.urls["rabbitmq"])
        api = os.environ.get("RABBITMQ_API_URL", f"http://{amqp.hostname}:15672/api")
        listed = requests.get(f"{api}/bindings", auth=(amqp.username or "guest",
                                                       amqp.password or "guest"), timeout=10)
        rows = [[b["source"], b["destination"], b["routing_key"]] for b in listed.json()]
    prefix = f"{lab.namespace}." if lab.namespace else ""
    return [(source[len(prefix):], queue[len(prefix):], key) for source, queue, key in rows
            if source.startswith(prefix) and source[len(prefix):] in exchanges
            and not queue.endswith((".retry", ".dead", ".unrouted"))
            and not queue[len(prefix):].startswith("lab01.")]


listeners: dict[str, set[str]] = defaultdict(set)
for exchange, queue, key in bindings():
    listeners[(exchange, key)].add(queue.split(".")[0])
table(["exchange", "routing key", "consumed by"],
      [[exchange, f"`{key}`", ", ".join(sorted(who))]
       for (exchange, key), who in sorted(listeners.items())])

for (exchange, key), who in listeners.items():
    assert exchange not in who, f"{exchange} listens to its own {key}: that is not a boundary"
assert "notifications" in listeners[("orders", "#")]
assert "email" in listeners[("orders", "order.confirmed")]

# %% [markdown]
# Notice what is *not* there: no service reaches into another's database, and no event is
# consumed by the service that published it. Where one service needs another's facts right now
# (orders needs a price, a reservation, a charge) it calls it over HTTP — notebook 03; where it
# only needs to know that something happened, it listens — notebook 04.
#
# ## Leave the sandbox as we found it
#
# Our listening queue goes; the services' own queues stay.

# %%
connection = pika.BlockingConnection(pika.URLParameters(lab.urls["rabbitmq"]))
channel = connection.channel()
for queue in (WATCH, f"{WATCH}.retry", f"{WATCH}.dead"):
    channel.queue_delete(bus.physical(queue))
connection.close()
lab.tidy()

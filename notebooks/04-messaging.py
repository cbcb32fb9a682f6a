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
# # 04 · Messaging: events that reach everyone, even after the broker was away
#
# Services tell each other what happened by publishing events to RabbitMQ, without knowing or
# waiting for who listens. You will see a topic exchange hand each event to the queues whose
# pattern matches its routing key, a poison message retried and then parked in a dead-letter
# queue while its neighbours go through, and orders placed while orders cannot reach the broker:
# they confirm anyway, their events wait in orders' own database, and every one of them arrives
# once the link is back.
#
# The code: [patterns/bus.py](../patterns/bus.py) (exchanges, queues, confirms, retries,
# dead letters), [patterns/outbox.py](../patterns/outbox.py) (the transactional outbox),
# [services/orders/store.py](../services/orders/store.py) and
# [services/email/events.py](../services/email/events.py) (a consumer of orders' events).

# %%
from microlab.lab import Lab, wait_until
lab = Lab.connect()

# %% [markdown]
# ## A topic exchange decides who gets what
#
# A publisher sends an event to an *exchange* with a *routing key* such as `order.confirmed`.
# Each consumer owns a *queue* and binds it to the exchange with a pattern: the words of the key
# are separated by dots, `*` stands for exactly one word and `#` for any number of words (zero
# included). The exchange copies the event into every queue whose pattern matches; the publisher
# never learns who they are, so a new consumer joins without anyone else changing.
#
# We work in a RabbitMQ namespace of our own (a prefix on every name), so nothing we declare can
# be confused with the services' exchanges and queues.

# %%
import collections
import json
import logging
import time
from contextlib import contextmanager

import pika
from patterns.bus import Bus, dead_letter_queue, retry_queue, unrouted_queue

NAMESPACE = f"{lab.namespace or 'lab'}-nb04"
bus = Bus(lab.urls["rabbitmq"], namespace=NAMESPACE)
# A plain pika connection of our own, to look into queues. No heartbeats: it sits idle while
# you read, and a blocking connection only answers heartbeats while it is being called.
parameters = pika.URLParameters(lab.urls["rabbitmq"])
parameters.heartbeat = 0
broker = pika.BlockingConnection(parameters)
channel = broker.channel()

# Everything this notebook declares, by its broker name, so the last cell can delete it.
our_queues, our_exchanges, consumers = set(), set(), []


def declared(bus, queue, *exchanges):
    """Remember the queue a consumer declares, with its retry and dead-letter queues, and the
    exchanges it binds (each with its `.unrouted` parking exchange and queue)."""
    name = bus.physical(queue)
    our_queues.update({name, retry_queue(name), dead_letter_queue(name)})
    our_exchanges.add(bus.physical(bus.dead_letter_exchange))  # where `.dead` queues are fed
    for exchange in exchanges:
        physical = bus.physical(exchange)
        our_exchanges.update({physical, unrouted_queue(physical)})
        our_queues.add(unrouted_queue(physical))


def clean_up():
    """Stop our consumers and delete every queue and exchange we declared."""
    for consumer in consumers:
        consumer.stop()
    for queue in sorted(our_queues):
        channel.queue_delete(queue)
    for exchange in sorted(our_exchanges):
        channel.exchange_delete(exchange)


@contextmanager
def cleaned_up_on_failure():
    """If the cell fails, leave nothing of ours behind in the broker."""
    try:
        yield
    except BaseException:
        clean_up()
        raise


def depth(queue):
    """How many messages wait in a queue (by its broker name)."""
    return channel.queue_declare(queue, passive=True).method.message_count


# The bus logs each failed attempt with a full traceback; one line each is enough here.
class OneLine(logging.Formatter):
    def format(self, record):
        return f"[bus] {record.levelname.lower()}: {record.getMessage()}"


handler = logging.StreamHandler()
handler.setFormatter(OneLine())
logging.getLogger("patterns.bus").addHandler(handler)
logging.getLogger("patterns.bus").propagate = False
print("our namespace:", NAMESPACE)

# %% [markdown]
# Three consumers of one exchange, `shop`: billing wants `order.` followed by exactly one word
# (`order.*`), the warehouse wants stock events of any depth (`stock.#`), and an audit log
# wants everything (`#`). We publish four events and look at what each queue received.

# %%
received = collections.defaultdict(list)


def keep_for(name):
    def record(message):
        received[name].append(message.routing_key)
    return record


BINDINGS = {"billing": "order.*", "warehouse": "stock.#", "audit": "#"}
with cleaned_up_on_failure():
    for name, pattern in BINDINGS.items():
        declared(bus, f"nb04.{name}", "shop")
        consumers.append(bus.consumer(f"nb04.{name}", keep_for(name), ("shop", pattern)).start())

    published = ["order.created", "order.confirmed", "stock.low", "order.line.added"]
    for key in published:
        bus.publish("shop", key, {"example": key})  # returns once the broker confirmed it
    wait_until(lambda: sum(map(len, received.values())) == 7, 10, what="7 deliveries")
    time.sleep(0.3)  # room for a delivery that should not happen

    for name, pattern in BINDINGS.items():
        print(f"{name:<10} {pattern:<9} got {received[name]}")
    assert received["billing"] == ["order.created", "order.confirmed"]  # * is one word only
    assert received["warehouse"] == ["stock.low"]
    assert received["audit"] == published  # in publishing order

# %% [markdown]
# `order.line.added` has three words, so `order.*` does not match it: only the audit log got
# it. Try it: bind billing with `order.#` instead and run the cell again (delete its queue
# first, or the old binding stays — bindings add up).
#
# ## A poison message: retried, then parked, never lost
#
# A handler that fails on one message must neither lose it (ack and forget) nor retry it forever
# at the head of the queue, blocking everyone behind it. The bus moves a failed message to
# `<queue>.retry`, where it waits `retry_delay` seconds and then rejoins the back of the queue;
# after `max_attempts` failures it goes to `<queue>.dead` with the last error in its headers,
# for a person to look at. Here the payments handler cannot parse one card number, whatever
# happens.

# %%
attempts = []  # (seconds since the first publish, message number, attempt, outcome)
charged = collections.Counter()


def charge_card(message):
    number = message.body["n"]
    elapsed = time.monotonic() - began
    if not message.body["card"].isdigit():
        attempts.append((elapsed, number, message.attempt, "failed"))
        raise ValueError(f"card number {message.body['card']!r} is not a number")
    attempts.append((elapsed, number, message.attempt, "ok"))
    charged[number] += 1


QUEUE = "nb04.payments"
with cleaned_up_on_failure():
    declared(bus, QUEUE, "shop")
    consumers.append(bus.consumer(QUEUE, charge_card, ("shop", "payment.requested"),
                                  max_attempts=3, retry_delay=0.5).start())
    cards = ["4242424242424242", "42-oops", "5555555555554444", "4000056655665556"]
    began = time.monotonic()
    for number, card in enumerate(cards):
        bus.publish("shop", "payment.requested", {"n": number, "card": card})
    dead = dead_letter_queue(bus.physical(QUEUE))
    wait_until(lambda: depth(dead) == 1, 15, what="the poison message in the dead-letter queue")

# %% [markdown]
# What is in the dead-letter queue, and what happened to the others? We take the parked
# message out to read it and put it back (`requeue=True`): it stays there for whoever fixes the
# handler.

# %%
with cleaned_up_on_failure():
    method, properties, body = channel.basic_get(dead)
    channel.basic_nack(method.delivery_tag, requeue=True)
    headers = properties.headers
    print("parked:", body.decode())
    print("after", headers["attempt"], "attempts; last error:", headers["last-error"])
    print("it came from", headers["origin-exchange"], "with key", headers["origin-routing-key"])
    print("charged exactly once each:", dict(charged))

    assert b"42-oops" in body and headers["attempt"] == 3
    assert "ValueError" in headers["last-error"] and "not a number" in headers["last-error"]
    assert [a[3] for a in attempts if a[1] == 1] == ["failed"] * 3  # max_attempts, no more
    assert charged == {0: 1, 2: 1, 3: 1}  # nothing else lost, nothing twice
    assert depth(bus.physical(QUEUE)) == 0 and depth(retry_queue(bus.physical(QUEUE))) == 0
    # The good messages behind the poison did not wait for its retries.
    first_poison_retry = min(a[0] for a in attempts if a[1] == 1 and a[2] == 2)
    assert max(a[0] for a in attempts if a[1] in (2, 3)) < first_poison_retry

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 2.6))
for elapsed, number, attempt, outcome in attempts:
    ax.scatter(elapsed, number, marker="x" if outcome == "failed" else "o", s=70,
               color="tab:red" if outcome == "failed" else "tab:green")
    ax.annotate(f"#{attempt}", (elapsed, number), textcoords="offset points", xytext=(6, 4))
ax.set_yticks(range(len(cards)), [f"message {n}: {card}" for n, card in enumerate(cards)])
ax.invert_yaxis()
ax.set_xlabel("seconds since the first publish")
ax.set_title("Handler calls: the poison message (red) retried twice, then dead-lettered")
plt.tight_layout()
plt.show()

# %% [markdown]
# The healthy messages were handled at once; the poison one came back every `retry_delay`
# seconds, three times in all, then stopped costing anything. Try `max_attempts=1` (a body that
# can never be parsed deserves no retry), or a longer `retry_delay` for an outage that lasts.
#
# ## The broker cut off while orders are placed
#
# Placing an order is a chain of HTTP calls (the saga of notebook 05); the events announcing it
# (`order.created`, `order.status_changed`, `order.confirmed`) are for others: notifications,
# the email receipt. Orders never publishes them from the request. It writes them into the
# order document itself, in the same single write that changes the order (the *transactional
# outbox*), and a relay thread publishes them afterwards, removing each one only once the broker
# confirmed it. So if the broker is unreachable, the order still confirms and its events wait.
#
# To watch them arrive we bind a queue of our own to the sandbox's real `orders` exchange
# (in the sandbox's namespace this time), next to the email service's queue.

# %%
import threading

from pymongo import MongoClient

orders_db = MongoClient(lab.urls["mongo"])["orders"]  # orders' own database
sandbox_bus = Bus(lab.urls["rabbitmq"], namespace=lab.namespace)
confirmed_seen = []  # (monotonic time, order id, message id) of each order.confirmed delivered
WATCH = "nb04.order-watch"

with cleaned_up_on_failure():
    name = sandbox_bus.physical(WATCH)
    # Our queue, its retry and its dead-letter queue; the exchanges are the services'.
    our_queues.update({name, retry_queue(name), dead_letter_queue(name)})
    consumers.append(sandbox_bus.consumer(
        WATCH, lambda m: confirmed_seen.append((time.monotonic(), m.body["order_id"], m.id)),
        ("orders", "order.confirmed")).start())
    customer = lab.customer("Grace")

    def available(product_id):
        answer = customer.get(f"{lab.gateway}/api/inventory/{product_id}", timeout=10)
        answer.raise_for_status()
        return answer.json()["available"]

    product = next(p for p in lab.products() if available(p["id"]) >= 10)
    print("we will buy:", product["name"], "-", available(product["id"]), "in stock")


def backlog():
    """Events waiting in orders' outbox, over every order."""
    return sum(d["outbox_pending"] for d in
               orders_db.orders.find({"outbox_pending": {"$gt": 0}}, {"outbox_pending": 1}))


print("events waiting in orders' outbox now:", backlog())

# %% [markdown]
# Now cut the `orders->rabbitmq` edge (new connections refused, open ones closed), place three
# orders, and look inside orders' database while the link is down. A background thread samples
# the outbox backlog for the plot.

# %%
samples, placed_at = [], {}  # (monotonic time, backlog); order id -> when it was confirmed
sampling = threading.Event()


def sample():
    while not sampling.is_set():
        samples.append((time.monotonic(), backlog()))
        time.sleep(0.1)


sampler = threading.Thread(target=sample, daemon=True)
with cleaned_up_on_failure():
    cut_at = time.monotonic()
    lab.chaos.cut("orders->rabbitmq")
    try:
        sampler.start()
        for _ in range(3):
            answer = customer.post(f"{lab.gateway}/api/orders", timeout=30,
                                   json={"items": [{"product_id": product["id"], "quantity": 1}]})
            order = answer.json()
            print(answer.status_code, order["id"], order["status"])
            assert answer.status_code == 201 and order["status"] == "confirmed"
            placed_at[order["id"]] = time.monotonic()
        placed = list(placed_at)
        time.sleep(1.5)  # the relay keeps trying meanwhile

        waiting = {}
        for order in orders_db.orders.find({"_id": {"$in": placed}}):
            waiting[order["_id"]] = [json.loads(event)["routing_key"] for event in order["outbox"]]
            print(order["_id"], order["status"], "outbox:", waiting[order["_id"]])
        assert len(waiting) == 3 and all(
            keys == ["order.created", "order.status_changed", "order.confirmed"]
            for keys in waiting.values())
        assert not [seen for seen in confirmed_seen if seen[1] in placed]  # nothing got out
    except BaseException:
        sampling.set()
        raise
    finally:
        lab.chaos.restore("orders->rabbitmq")
        restored_at = time.monotonic()

# %% [markdown]
# Three confirmed orders and nine events waiting in MongoDB, each stored as the exact message
# the relay will publish; none reached our queue. The link is back: we wait until our queue has
# seen `order.confirmed` for every order, and until each receipt email exists (the email service
# consumes the same event on its own queue).

# %%
with cleaned_up_on_failure():
    try:
        wait_until(lambda: {seen[1] for seen in confirmed_seen} >= set(placed), 30,
                   what="order.confirmed for every order placed during the cut")
        wait_until(lambda: not any(d.get("outbox_pending") for d in
                                   orders_db.orders.find({"_id": {"$in": placed}})), 10,
                   what="orders' outbox empty for our orders")
        time.sleep(0.5)  # room for a duplicate to show up, if there were one
    finally:
        sampling.set()
        sampler.join()

    ours = [seen for seen in confirmed_seen if seen[1] in placed]
    arrivals = collections.Counter(seen[1] for seen in ours)
    print("order.confirmed deliveries per order:", dict(arrivals))
    print(f"the first arrived {min(s[0] for s in ours) - restored_at:.2f} s after the restore")
    assert arrivals == {order_id: 1 for order_id in placed}  # none missing, none twice
    assert min(s[0] for s in ours) > restored_at

    def receipts():
        mail = customer.get(f"{lab.gateway}/api/emails", timeout=10).json()["items"]
        return collections.Counter(m["related"].get("order_id") for m in mail
                                   if m["event_type"] == "order.confirmed")

    wait_until(lambda: set(receipts()) >= set(placed), 30, what="a receipt for every order")
    print("receipt emails per order:", dict(receipts()))
    assert receipts() == {order_id: 1 for order_id in placed}

# %%
fig, ax = plt.subplots(figsize=(9, 3.2))
ax.step([t - cut_at for t, _ in samples], [n for _, n in samples], where="post",
        color="tab:blue", label="events waiting in orders' outbox")
ax.axvspan(0, restored_at - cut_at, color="tab:red", alpha=0.12, label="orders->rabbitmq cut")
for at in placed_at.values():
    ax.axvline(at - cut_at, color="tab:gray", linestyle=":", linewidth=1)
ax.plot([t - cut_at for t, _, _ in ours], [0.3] * len(ours), "v", color="tab:green",
        markersize=9, label="order.confirmed received")
ax.set_xlabel("seconds since the cut (dotted lines: an order confirmed)")
ax.set_ylabel("events")
ax.set_title("The outbox holds the events while the broker is away, then drains")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The backlog grew by three events per order while the broker was unreachable (one when the
# order is created, two more when it is confirmed) and fell to zero soon after the restore (how
# soon depends on where the relay was in its backoff). Had orders published straight from the
# request, these events would have been lost, or the orders refused while a component they do
# not need was away. The price of the outbox: consumers hear later,
# and sometimes twice (a relay that dies between the confirm and the removal sends again), which
# is why the email service keys each email on the event's message id.
#
# Try next: cut `email->rabbitmq` instead and watch our queue get the events while the receipts
# wait; or cut every `*->rabbitmq` edge at once (`lab.chaos.edges()` lists them).
#
# ## Leave the sandbox as we found it

# %%
clean_up()
for queue in our_queues:  # each one is gone: a passive declare of it is refused (404)
    probe = broker.channel()
    try:
        probe.queue_declare(queue, passive=True)
        raise AssertionError(f"{queue} still exists")
    except pika.exceptions.ChannelClosedByBroker as refused:
        assert refused.reply_code == 404
broker.close()
bus.close()
sandbox_bus.close()
print(f"deleted {len(our_queues)} queues and {len(our_exchanges)} exchanges")
lab.tidy()

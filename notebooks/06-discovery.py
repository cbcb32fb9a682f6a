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
# # 06 · Service discovery and client-side load balancing
#
# A caller should not need to know where its peers run, or how many copies of them there are.
# In this notebook you ask the registry what is running, start a second copy of the products
# service and watch it sign itself in, spread calls evenly over both copies, and then kill one
# without warning: the caller steps around it at once, and the registry drops it a few seconds
# later.
#
# The client side is [patterns/discovery.py](../patterns/discovery.py) (`Discovery`,
# `Registration`, `Balancer`); every service registers through
# [patterns/service.py](../patterns/service.py); the registry, which speaks a subset of
# Consul's HTTP API, is [services/registry/app.py](../services/registry/app.py) and its rules
# [services/registry/domain.py](../services/registry/domain.py).

# %%
import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import consul
import matplotlib.pyplot as plt

import services
from microlab.lab import Lab, wait_until
from patterns.discovery import Discovery
from patterns.http import ServiceClient

lab = Lab.connect()
registry_address = urlsplit(lab.urls["registry"])
registry = consul.Consul(host=registry_address.hostname, port=registry_address.port)
print("registry:", lab.urls["registry"])

# %% [markdown]
# ## What the registry knows
#
# Nobody writes the registry's list by hand. Each service, as it starts, registers itself:
# its name, its address, and two health checks — a *heartbeat* (a TTL check the service must
# pass every few seconds) and an *HTTP check* (the registry calls the service's `/health`).
# The registry hands out an instance only while all its checks pass.
#
# We ask with `py-consul`, the same client you would point at a real Consul cluster.

# %%
_index, names = registry.catalog.services()
healthy = {}
for name in sorted(names):
    _index, entries = registry.health.service(name, passing=True)
    healthy[name] = [f"{entry['Service']['Address']}:{entry['Service']['Port']}"
                     for entry in entries]
    print(f"{name:<14} {', '.join(healthy[name]) or '(none healthy)'}")

# Every service but the registry itself has signed in, and each has a healthy instance.
assert set(healthy) >= set(lab.topology.services) - {"registry"}, set(healthy)
assert all(healthy[name] for name in lab.topology.services if name != "registry"), healthy
products_port = urlsplit(lab.urls["products"]).port
assert f"127.0.0.1:{products_port}" in healthy["products"]

# %% [markdown]
# Those are the services' real addresses. In this sandbox each service is *also* handed its
# peers' URLs in its environment (through the chaos proxies, so you can break a hop), and a URL
# given wins; `kit.peer(name)` falls back to the registry when no `<NAME>_URL` is set. Below we
# are the caller, and we find products through the registry alone.

# %% [markdown]
# ## A second products instance
#
# Scaling out a stateless service means running one more copy of the same code with the same
# settings. A service reads everything from its environment
# ([patterns/settings.py](../patterns/settings.py)), so the copy gets the same variables as the
# first one — same database, same broker, same registry — and only a port of its own. (It talks
# to MongoDB and RabbitMQ directly: the chaos proxies were made for the first copy.) Nobody
# tells the registry about it: it registers itself as it starts.
#
# One thing does not scale out for free: each copy runs an outbox relay over the same
# collection, and two relays may publish an event twice
# ([patterns/outbox.py](../patterns/outbox.py)). Consumers drop the duplicate, and nothing is
# written to the catalogue while we test here.
#
# This process must not outlive the notebook, whatever happens: it leads its own process group
# (so one signal reaches the gunicorn master and its worker), the kernel asks Linux to send it
# SIGTERM should the kernel die, and `remove_second_instance()` runs if a cell below fails, at
# exit, and in the last cell.

# %%
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def die_with_the_kernel() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


second_port = free_port()
second_id = f"products-127.0.0.1-{second_port}"  # the ID Registration gives it
second_log = Path(tempfile.mkstemp(prefix="products-second-", suffix=".log")[1])
second_env = {
    "PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1",
    "SERVICE_NAME": "products", "HOST": "127.0.0.1", "PORT": str(second_port), "THREADS": "4",
    "MONGO_URL": lab.urls["mongo"], "MONGO_DB": "products",
    "AMQP_URL": lab.urls["rabbitmq"], "BUS_NAMESPACE": lab.namespace,
    "CONSUL_URL": lab.urls["registry"],
    # its spans go where the other services' go
    "OTEL_TRACES_EXPORTER": "jsonl" if lab.trace_file else "none",
    "TRACE_FILE": str(lab.trace_file or ""),
}
second: subprocess.Popen | None = None
log_file = None


def remove_second_instance() -> None:
    """Kill the second instance (if it runs) and take it out of the registry (if it is in)."""
    if second is not None and second.poll() is None:
        os.killpg(second.pid, signal.SIGKILL)
        second.wait(timeout=10)
    registry.agent.service.deregister(second_id)  # a no-op if it is not registered
    if log_file is not None:
        log_file.close()
    second_log.unlink(missing_ok=True)


atexit.register(remove_second_instance)


@contextmanager
def second_instance_removed_on_failure():
    try:
        yield
    except BaseException:
        remove_second_instance()
        raise


discovery = Discovery(lab.urls["registry"])


def passing_ids() -> set[str]:
    return {instance.service_id for instance in discovery.healthy("products")}

# %% [markdown]
# Start it, and wait until the registry lists it as passing. We never call the registry on its
# behalf: `ServiceKit.start()` registers it, and its heartbeat and `/health` make it pass.

# %%
with second_instance_removed_on_failure():
    began = time.monotonic()
    log_file = second_log.open("w")
    second = subprocess.Popen(
        [sys.executable, "-m", "services.products"], env=second_env,
        cwd=Path(services.__file__).resolve().parent.parent,
        stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=die_with_the_kernel)
    wait_until(lambda: second_id in passing_ids() or second.poll() is not None, timeout=40,
               what="the second products instance registered and passing")
    assert second.poll() is None, second_log.read_text()[-2000:]
    print(f"started, registered and healthy in {time.monotonic() - began:.1f} s "
          f"(pid {second.pid}, port {second_port})")

# %% [markdown]
# The registry now has two products instances, both passing both checks:

# %%
with second_instance_removed_on_failure():
    _index, entries = registry.health.service("products", passing=True)
    for entry in entries:
        service = entry["Service"]
        checks = {check["Name"]: check["Status"] for check in entry["Checks"]
                  if check["ServiceID"]}
        print(f"{service['ID']:<28} {service['Address']}:{service['Port']}  {checks}")
    assert {entry["Service"]["Port"] for entry in entries} == {products_port, second_port}

# %% [markdown]
# ## Round robin
#
# `discovery.balancer("products")` gives a `Balancer`: each pick is the next healthy instance
# in turn, from a list it caches for `cache_for` (3 s) so it does not ask the registry on every
# call. `balancer.call(fn)` hands `fn` the base URL of the instance it picked. We count which
# instance answered each of 20 calls twice over: by the address the balancer chose, and from
# the second instance's own access log, which knows nothing of the balancer.
#
# `fn` uses our `ServiceClient`, one per instance: it turns a refused connection or a timeout
# into `ServiceUnavailable`, the kind of error the balancer fails over on.

# %%
first_url, second_url = f"http://127.0.0.1:{products_port}", f"http://127.0.0.1:{second_port}"
label = {first_url: f"first  :{products_port}", second_url: f"second :{second_port}"}
clients: dict[str, ServiceClient] = {}
attempts: list[tuple[float, str, str]] = []  # (when, instance, "ok" or "failed")


def list_products(base_url: str) -> dict:
    client = clients.setdefault(base_url, ServiceClient("products", base_url, caller="notebook"))
    started = time.monotonic()
    try:
        page = client.get_json("/api/v1/products", params={"limit": 1})
    except Exception:
        attempts.append((started, base_url, "failed"))
        raise
    attempts.append((started, base_url, "ok"))
    return page


def served_by_second_per_its_log() -> int:
    return sum('"caller": "notebook"' in line for line in second_log.read_text().splitlines())


with second_instance_removed_on_failure():
    balancer = discovery.balancer("products", eject_for=30.0)
    for _ in range(20):
        balancer.call(list_products)
    picked = Counter(label[url] for _when, url, _outcome in attempts)
    print(dict(picked))
    assert picked == {label[first_url]: 10, label[second_url]: 10}, picked
    logged = wait_until(lambda: served_by_second_per_its_log() >= 10 and
                        served_by_second_per_its_log(), timeout=5, what="10 lines in its log")
    print("the second instance's log counts", logged, "requests from us")
    assert logged == 10

# %% [markdown]
# An exact split: round robin simply takes turns. `strategy="random"` would split the calls
# evenly only *on average* — try it, with `rng=random.Random(1)` for a repeatable run.
#
# ## Killing one instance
#
# Now the second instance is killed with SIGKILL: no handler runs, so it cannot deregister — like
# a machine losing power or a process killed for using too much memory. Until its checks fail,
# the registry still hands it out. We keep calling every 50 ms; the kill comes right after a
# call the first instance answered, so the very next pick is the dead one.
#
# `balancer.call` sees the refused connection, *ejects* that instance for `eject_for` seconds
# (30 here, longer than the registry needs to notice) and retries on the other one, so the
# caller never sees the error (the warning printed below is the balancer's log line). Meanwhile
# we watch the registry for the moment it stops listing the dead instance.

# %%
with second_instance_removed_on_failure():
    attempts.clear()
    began = time.monotonic()
    killed_at = dropped_at = None
    answers = []
    while time.monotonic() - began < 25:
        answers.append(balancer.call(list_products))  # raises if failover did not work
        now = time.monotonic()
        if killed_at is None and now - began > 1.0 and attempts[-1][1] == first_url:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(timeout=10)
            killed_at = time.monotonic()
        elif killed_at is not None and dropped_at is None and second_id not in passing_ids():
            dropped_at = time.monotonic()
        elif dropped_at is not None and now - dropped_at > 0.5:
            break
        time.sleep(0.05)

assert killed_at is not None and dropped_at is not None, "the registry never dropped it"
failed = [(when, url) for when, url, outcome in attempts if outcome == "failed"]
after_kill = [(when, url) for when, url, outcome in attempts if when > killed_at]
print(f"{len(answers)} calls, every one answered; {len(attempts)} attempts, "
      f"{len(failed)} failed")
print(f"the balancer ejected the dead instance {failed[0][0] - killed_at:.2f} s after the kill")
print(f"the registry stopped listing it         {dropped_at - killed_at:.2f} s after the kill")

assert all("items" in answer for answer in answers)
# Exactly one attempt reached the dead instance: the first one after the kill...
assert failed == [after_kill[0]] and failed[0][1] == second_url, failed
# ...and from then on every call went to the survivor.
assert {url for _when, url in after_kill[1:]} == {first_url}
assert failed[0][0] - killed_at < 2.0
# The heartbeat TTL is 10 s: the registry notices within it (plus a little slack).
assert dropped_at - killed_at < 15.0, dropped_at - killed_at

# %%
row = {first_url: 1, second_url: 0}
fig, ax = plt.subplots(figsize=(10, 3.2))
for outcome, style, text in (
        ("ok", dict(marker="o", color="tab:blue", s=14), "answered"),
        ("failed", dict(marker="X", color="tab:red", s=90), "refused (failed over)")):
    points = [(when - killed_at, row[url]) for when, url, what in attempts if what == outcome]
    ax.scatter(*zip(*points), label=text, zorder=3, **style)
ax.axvline(0, color="tab:red", linestyle="--")
ax.text(0, 1.4, " SIGKILL", color="tab:red", va="center")
ax.axvline(dropped_at - killed_at, color="tab:green", linestyle="--")
ax.text(dropped_at - killed_at, 1.4, "registry drops it ", color="tab:green", va="center",
        ha="right")
ax.set_yticks([1, 0], [label[first_url], label[second_url]])
ax.set_ylim(-0.5, 1.6)
ax.set_xlabel("seconds since the second instance was killed")
ax.set_ylabel("instance")
ax.set_title("Which products instance each attempt went to")
ax.legend(loc="center right")
plt.tight_layout()
plt.show()

# %% [markdown]
# Two clocks are at work. The **caller** noticed within one call, because it was the one
# holding the refused connection; it needs no registry for that. The **registry** only knows
# what its checks tell it: the heartbeat stopped, so the TTL check turned critical when its 10 s
# ran out (and the HTTP check, every 10 s, found nobody at the address). Every other caller that
# had not yet tried the dead instance relied on that.
#
# The instance is not *gone* from the registry, only unhealthy. Consul removes a service whose
# check has been critical for `DeregisterCriticalServiceAfter` (60 s here), so a service that
# merely paused for a moment does not have to register again.

# %%
_index, entries = registry.health.service("products")  # passing or not
status = {entry["Service"]["ID"]: {check["Name"]: check["Status"] for check in entry["Checks"]
                                   if check["ServiceID"]} for entry in entries}
for service_id, checks in status.items():
    print(f"{service_id:<28} {checks}")
assert set(status[second_id].values()) == {"critical"}, status[second_id]
assert set(status[f"products-127.0.0.1-{products_port}"].values()) == {"passing"}

# %% [markdown]
# ## Try it yourself
#
# - Set `eject_for=1.0` where the balancer is made and run the notebook again: each time the
#   ejection runs out, the balancer tries the dead instance once more, until the registry has
#   dropped it — one refused attempt (quickly retried elsewhere) a second, and the asserts say so.
# - Add `cache_for=0.5` there too: the balancer learns of the registry's change sooner, at the
#   price of one registry call every half second from every caller.
# - Stop the second instance with `signal.SIGTERM` instead: gunicorn shuts down gracefully,
#   the service deregisters itself on the way out, and the registry drops it without waiting
#   for the TTL. Does any call still fail in between?

# %% [markdown]
# ## Leave the sandbox as we found it
#
# The second instance is already dead; it still has to leave the registry.

# %%
remove_second_instance()
_index, entries = registry.health.service("products")
assert second_id not in {entry["Service"]["ID"] for entry in entries}
lab.tidy()

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
# # 09 · From processes to containers
#
# Nine services need something to start them in the right order, restart them when they crash,
# wire each one to its peers and keep their configuration apart. On your laptop that is the
# `microlab` supervisor and a tree of processes; with Docker it is `docker compose` and one
# container per service; in a cluster it is Kubernetes. All three read the same facts: who runs,
# on which port, and who talks to whom — [microlab/topology.toml](../microlab/topology.toml).
#
# Here you look at the process tree that runs right now, check that its wiring really goes through
# the chaos proxies, and derive the compose service of each process from the same topology.

# %%
import psutil
import yaml
from IPython.display import Markdown, display

from microlab.compose import compose_document
from microlab.lab import Lab
from microlab.processes import ROOT
from microlab.topology import peer_env_name, plan_ports

lab = Lab.connect()
topology = lab.topology

# %% [markdown]
# ## The local process tree
#
# The supervisor starts each service as `python -m services.<name>`, forked from the zygote
# ([microlab/zygote.py](../microlab/zygote.py)): a process that imported the services' libraries
# once, so the services share those pages and skip the imports. Each service is one gunicorn
# worker with a pool of threads and no gunicorn master: restarting a service that dies is the
# supervisor's job. Infrastructure runs beside them: the embedded MongoDB and the chaos proxy
# (RabbitMQ is the machine's own).

# %%
status = {row["service"]: row for row in lab.status()["services"]}
supervisor = psutil.Process(status["supervisor"]["pid"])
tree = {child.pid: child for child in supervisor.children(recursive=True)}
rows = []
for name, row in status.items():
    if name == "supervisor" or row["pid"] is None:
        continue
    process = psutil.Process(row["pid"])
    workers = process.children(recursive=True)
    command = " ".join(process.cmdline()[1:4])
    rows.append(f"| {name} | {row['pid']} | {len(workers)} | {row['port']} | `{command}` |")
    assert row["pid"] in tree, f"{name} is not a child of the supervisor"
display(Markdown("| process | pid | children | port | command |\n|---|---|---|---|---|\n"
                 + "\n".join(rows)))
assert {row.split(" | ")[0][2:] for row in rows} >= set(topology.services)

# %% [markdown]
# ## The wiring: every hop through a proxy
#
# A service learns where its peers are from environment variables (`PAYMENTS_URL`,
# `MONGO_URL`, ...), never from code. In local mode the supervisor points each of them at the
# proxy of that edge, which is why any single hop can be slowed or cut. Ask the supervisor for
# the URLs it started the orders process with (`lab.wiring`: exactly the environment the process
# reads; `/proc/<pid>/environ` would show the zygote's, which it was forked from):

# %%
listening = {state.listen.rsplit(":", 1)[1]: state.edge for state in lab.chaos.edges()}


def wiring(service: str) -> dict[str, str]:
    """Peer and infrastructure URLs in a running service's environment."""
    environ = lab.wiring(service)
    names = [peer_env_name(callee) for callee in topology.service(service).calls]
    names += [name for name in ("MONGO_URL", "AMQP_URL") if name in environ]
    return {name: environ[name] for name in names}


for name, url in wiring("orders").items():
    port = url.rstrip("/").rsplit(":", 1)[1]
    print(f"{name:<14} {url:<42} → proxy of {listening.get(port, 'NO PROXY')}")

for service in topology.services:
    for name, url in wiring(service).items():
        port = url.rstrip("/").rsplit(":", 1)[1]
        assert port in listening, f"{service}: {name}={url} bypasses the chaos proxies"

# %% [markdown]
# ## The same service under compose
#
# Under `docker compose` each process becomes a container of one image; the command picks the
# service. Peers are found by their compose names instead of `127.0.0.1`, and each edge still runs
# through a proxy, now the real Toxiproxy container. The repository's
# [docker-compose.yml](../docker-compose.yml) is generated from the topology by
# [microlab/compose.py](../microlab/compose.py) (`make compose`); here is its orders service,
# with the very variable names its process reads above:

# %%
compose_file = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
assert compose_file == yaml.safe_load(yaml.safe_dump(compose_document(topology))), (
    "docker-compose.yml drifted from the topology: run `make compose`")
composed = compose_file["services"]
print(yaml.safe_dump({"orders": composed["orders"]}, sort_keys=False))

for service in topology.services:
    if service == "registry":  # under compose, the real Consul takes our registry's place
        assert "consul" in composed
        continue
    local, environment = wiring(service), composed[service]["environment"]
    assert set(local) <= set(environment), f"{service}: compose lacks {set(local) - set(environment)}"
    for name in local:  # the same hop, through the proxy of the same edge
        assert environment[name].rsplit(":", 1)[-1].rstrip("/") in {
            str(port) for port in plan_ports(topology).proxy_ports.values()}, (service, name)

# %% [markdown]
# Three things changed and nothing else: *where* the process runs (a container), *how* a peer's
# address is spelled (a compose name instead of `127.0.0.1`), and *who* starts things in order
# (`depends_on` with `condition: service_healthy` instead of the supervisor's start waves). The
# service code is the same — that is the point of reading every address from the environment.
#
# | concern | local mode | compose | Kubernetes |
# |---|---|---|---|
# | start a service | supervisor, `python -m services.X` | a container of the one image | a Deployment's pods |
# | find a peer | `PEER_URL` → proxy on 127.0.0.1 | `PEER_URL` → `toxiproxy:port` | a Service's DNS name |
# | start order | waves, each waits for `/health` | `depends_on: service_healthy` | readiness probes |
# | restart a crash | `microlab start` | `restart: on-failure` | the ReplicaSet |
#
# ## Leave the sandbox as we found it

# %%
lab.tidy()

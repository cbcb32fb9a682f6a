"""docker-compose.yml and Toxiproxy's config, generated from the topology.

    python -m microlab.compose            # write docker-compose.yml and compose/toxiproxy.json
    python -m microlab.compose --check    # exit 1, naming the differences, when they drift

The topology (`topology.toml`) stays the one source of truth: compose gets the same services,
ports and edges as local mode, each edge a proxy of the real Toxiproxy with the same name and
listen port as `make up` gives it, so `microlab chaos`, the Chaos Toolkit experiments,
toxiproxy-python and the notebooks work unchanged against either. What differs is spelled out
here, once:

- addresses: a peer is `toxiproxy:<edge port>` instead of `127.0.0.1:<edge port>`; a service
  binds 0.0.0.0 and advertises its compose name to the registry;
- the registry is the real Consul (the topology's `registry` is our Consul-API stand-in);
- traces go over OTLP to Jaeger instead of a JSON-lines file;
- start order: `depends_on: condition: service_healthy`, in the topology's start waves.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from microlab.processes import ROOT
from microlab.topology import Topology, load_topology, peer_env_name, plan_ports, wiring_env

COMPOSE_FILE = ROOT / "docker-compose.yml"
TOXIPROXY_CONFIG = ROOT / "compose" / "toxiproxy.json"
IMAGE = "microlab:latest"
# Compose names of the parts that are not our services.
INFRA_HOSTS = {"mongo": "mongo:27017", "rabbitmq": "rabbitmq:5672", "registry": "consul:8500"}
HEALTH = {"interval": "5s", "timeout": "5s", "retries": 5, "start_period": "60s"}
# Memory limits, measured under Podman with `make compose-test`: a service is a gunicorn master
# and its worker, each holding the app (~95 MB together); users needs room for scrypt (16 MiB a
# password hash), orders for sagas in flight, notifications for Socket.IO. The default stack adds
# up to 2048 MiB; the `tools` profile is extra.
SERVICE_MEMORY = {"notifications": "200m", "users": "176m", "gateway": "160m", "orders": "160m"}
DEFAULT_SERVICE_MEMORY = "148m"
HEADER = """\
# Generated from microlab/topology.toml by `python -m microlab.compose`: edit the topology (or
# microlab/compose.py) and run it again; tests/unit/test_compose_drift.py fails on any drift.
#
#   docker compose up            the shop: http://127.0.0.1:3000 (gateway)
#   docker compose --profile tools up    + JupyterLab (8888) and Locust's web UI (8089)
#
# Every hop between services, and from services to MongoDB, RabbitMQ and Consul, runs through
# a proxy of the Toxiproxy container (API on 127.0.0.1:8474), named as in local mode.
"""


def upstream_of(callee: str, topology: Topology) -> str:
    if callee in INFRA_HOSTS:
        return INFRA_HOSTS[callee]
    return f"{callee}:{topology.service(callee).port}"


def toxiproxy_config(topology: Topology) -> list[dict]:
    """Toxiproxy's `-config` file: one proxy per edge, on the port local mode gives it."""
    ports = plan_ports(topology).proxy_ports
    return [{"name": edge.proxy_name, "listen": f"0.0.0.0:{ports[edge.name]}",
             "upstream": upstream_of(edge.callee, topology), "enabled": True}
            for edge in topology.edges()]


def healthcheck(command: str | list[str]) -> dict:
    test = ["CMD-SHELL", command] if isinstance(command, str) else ["CMD", *command]
    return {"test": test, **HEALTH}


def healthy(*names: str) -> dict:
    return {name: {"condition": "service_healthy"} for name in names}


def service_environment(name: str, topology: Topology) -> dict[str, str | None]:
    """The same variables local mode's `service_env` sets, with compose addresses."""
    service = topology.service(name)
    ports = plan_ports(topology).proxy_ports

    def through_proxy(callee: str) -> str:
        return f"toxiproxy:{ports[f'{name}->{callee}']}"

    env: dict[str, str | None] = {
        "SERVICE_NAME": name, "HOST": "0.0.0.0", "ADVERTISE_HOST": name,
        "PORT": str(service.port), "THREADS": str(service.threads),
        "MICROLAB_ENV": "${MICROLAB_ENV:-dev}",
        **wiring_env(service, through_proxy)}
    if name == "gateway":
        env["REDIS_URL"] = "redis://redis:6379/0"
    if name == "users":  # passed through from the shell when set there, else left unset
        env.update(JWT_SECRET=None, ADMIN_EMAIL=None, ADMIN_PASSWORD=None)
    env.update(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT="http://jaeger:4318")
    return env


def our_services(topology: Topology) -> dict[str, dict]:
    first_wave = set(topology.waves()[0])
    compose: dict[str, dict] = {}
    for name, service in topology.services.items():
        if name == "registry":
            continue  # Consul runs in its place
        uses = [part for part in ("mongo", "rabbitmq") if part in service.uses]
        waits_for = ["toxiproxy", "consul", *uses]
        if name == "gateway":
            waits_for.append("redis")
        if name not in first_wave:  # the start waves of local mode
            waits_for += sorted(first_wave - {"registry"})
        compose[name] = {
            "image": IMAGE, "build": ".", "command": ["python", "-m", service.module],
            "environment": service_environment(name, topology),
            "ports": [f"127.0.0.1:{service.port}:{service.port}"],
            "depends_on": healthy(*waits_for),
            "healthcheck": healthcheck("python -m microlab.healthcheck"),
            "restart": "on-failure",
            "mem_limit": SERVICE_MEMORY.get(name, DEFAULT_SERVICE_MEMORY),
        }
    return compose


def infrastructure() -> dict[str, dict]:
    return {
        "mongo": {"image": "mongo:7", "command": ["--wiredTigerCacheSizeGB", "0.25"],
                  "ports": ["127.0.0.1:${MICROLAB_MONGO_PORT:-27017}:27017"],
                  "volumes": ["mongo-data:/data/db"],
                  "healthcheck": healthcheck(
                      "mongosh --quiet --eval 'db.adminCommand({ping: 1})'"),
                  "mem_limit": "272m"},
        "rabbitmq": {"image": "rabbitmq:3-management",
                     "ports": ["127.0.0.1:${MICROLAB_AMQP_PORT:-5672}:5672",
                               "127.0.0.1:${MICROLAB_RABBITMQ_UI_PORT:-15672}:15672"],
                     "volumes": ["rabbitmq-data:/var/lib/rabbitmq"],
                     "healthcheck": healthcheck("rabbitmq-diagnostics -q check_port_connectivity"),
                     "mem_limit": "224m"},
        "redis": {"image": "redis:7", "healthcheck": healthcheck("redis-cli ping"),
                  "mem_limit": "24m"},
        "toxiproxy": {"image": "ghcr.io/shopify/toxiproxy:2.12.0",
                      "command": ["-host=0.0.0.0", "-config=/config/toxiproxy.json",
                                  "-proxy-metrics"],
                      "volumes": ["./compose/toxiproxy.json:/config/toxiproxy.json:ro"],
                      "ports": ["127.0.0.1:8474:8474"],
                      "healthcheck": healthcheck(["/toxiproxy-cli", "list"]),
                      "mem_limit": "48m"},
        "consul": {"image": "hashicorp/consul:1.20",
                   "command": ["agent", "-dev", "-client=0.0.0.0", "-log-level=warn"],
                   "ports": ["127.0.0.1:8500:8500"],
                   "healthcheck": healthcheck("consul members"),
                   "mem_limit": "96m"},
        "jaeger": {"image": "jaegertracing/all-in-one:1.62.0",
                   "environment": {"COLLECTOR_OTLP_ENABLED": "true", "MEMORY_MAX_TRACES": "5000"},
                   "ports": ["127.0.0.1:16686:16686"], "mem_limit": "96m"},
    }


def tools(topology: Topology) -> dict[str, dict]:
    """The `tools` profile: JupyterLab over the notebooks and Locust's web UI, reaching the
    shop by compose names through the variables `microlab.lab.Lab` reads in local mode."""
    urls = {peer_env_name(name): f"http://{name}:{service.port}"
            for name, service in topology.services.items() if name != "registry"}
    urls.update(REGISTRY_URL="http://consul:8500", CONSUL_URL="http://consul:8500",
                MONGO_URL="mongodb://mongo:27017/", AMQP_URL="amqp://guest:guest@rabbitmq:5672/",
                TOXIPROXY_URL="http://toxiproxy:8474")
    return {
        "jupyter": {"image": IMAGE, "profiles": ["tools"],
                    "command": ["python", "-m", "jupyter", "lab", "--ip=0.0.0.0", "--port=8888",
                                "--no-browser", "--ServerApp.root_dir=/app/notebooks",
                                "--IdentityProvider.token=${JUPYTER_TOKEN:-microlab}"],
                    "environment": {**urls, "PYTHONPATH": "/app"},
                    "volumes": ["./notebooks:/app/notebooks"],
                    "ports": ["127.0.0.1:8888:8888"], "depends_on": healthy("gateway"),
                    "mem_limit": "512m"},
        "locust": {"image": IMAGE, "profiles": ["tools"],
                   "command": ["locust", "-f", "loadtests/locust_shop.py",
                               "--host=http://gateway:3000", "--web-host=0.0.0.0"],
                   "ports": ["127.0.0.1:8089:8089"], "depends_on": healthy("gateway"),
                   "mem_limit": "256m"},
    }


def compose_state(environ: Mapping[str, str] | None = None) -> dict:
    """The compose stack as `microlab chaos` and `microlab check` see a sandbox: its
    published ports on 127.0.0.1."""
    environ = os.environ if environ is None else environ
    topology = load_topology()
    urls = {name: f"http://127.0.0.1:{service.port}"
            for name, service in topology.services.items()}
    amqp = f"amqp://guest:guest@127.0.0.1:{environ.get('MICROLAB_AMQP_PORT', '5672')}/"
    urls.update(chaos="http://127.0.0.1:8474", rabbitmq=amqp,
                mongo=f"mongodb://127.0.0.1:{environ.get('MICROLAB_MONGO_PORT', '27017')}/")
    return {"urls": urls, "amqp_url": amqp, "namespace": ""}


def compose_document(topology: Topology) -> dict[str, Any]:
    return {"services": {**infrastructure(), **our_services(topology), **tools(topology)},
            "volumes": {"mongo-data": {}, "rabbitmq-data": {}}}


def render(topology: Topology) -> dict[Path, str]:
    """The generated files and their text."""
    compose = yaml.safe_dump(compose_document(topology), sort_keys=False, width=100)
    proxies = json.dumps(toxiproxy_config(topology), indent=2) + "\n"
    return {COMPOSE_FILE: HEADER + compose, TOXIPROXY_CONFIG: proxies}


def drift(files: dict[Path, str]) -> list[str]:
    """A unified diff per generated file whose text on disk differs."""
    found = []
    for path, wanted in files.items():
        current = path.read_text() if path.exists() else ""
        if current != wanted:
            found.append("".join(difflib.unified_diff(
                current.splitlines(True), wanted.splitlines(True),
                f"{path.name} (on disk)", f"{path.name} (from the topology)")))
    return found


def write_or_check(files: dict[Path, str], check: bool, stale: str) -> int:
    """What every generator of the topology's files does: write the files that changed, or with
    `check` print how each differs and exit 1 (saying `stale`) when any does."""
    if check:
        differences = drift(files)
        for diff in differences:
            print(diff)
        if differences:
            print(stale, file=sys.stderr)
        return 1 if differences else 0
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microlab.compose",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write: exit 1 when the files differ from the topology")
    args = parser.parse_args(argv)
    return write_or_check(render(load_topology()), args.check,
                          "compose files drifted from the topology: run `python -m microlab.compose`")


if __name__ == "__main__":
    sys.exit(main())

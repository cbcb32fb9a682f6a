"""The sandbox's map: services, infrastructure, ports and the edges between them.

Everything that needs to know "who runs where and talks to whom" reads it from here, so the
supervisor, the chaos proxy wiring, the CLI and the tests can never disagree. The data lives in
`topology.toml` beside this module; this module turns it into typed objects and concrete
addresses:

- `load_topology()` reads the file.
- `plan_ports()` picks the ports for one run: the defaults, the defaults shifted by an offset,
  or free ports chosen by the OS (so two test runs never collide).
- `service_env()` builds the environment a service process starts with: its own port and the
  URL of every peer, database and broker it uses, pointing through the edge's chaos proxy when
  proxies are on.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

TOPOLOGY_FILE = Path(__file__).with_name("topology.toml")
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Infrastructure:
    name: str
    port: int
    description: str
    external: bool = False


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    description: str
    uses: tuple[str, ...]
    calls: tuple[str, ...]
    threads: int = 16
    wave: int = 2

    @property
    def module(self) -> str:
        return f"services.{self.name}"


@dataclass(frozen=True)
class Edge:
    """One hop a learner can slow down or cut, e.g. `orders->payments`."""

    caller: str
    callee: str

    @property
    def name(self) -> str:
        return f"{self.caller}->{self.callee}"

    @property
    def proxy_name(self) -> str:
        # Toxiproxy names end up in URL paths; keep them free of '>' and '/'.
        return f"{self.caller}_to_{self.callee}"


@dataclass(frozen=True)
class Topology:
    infrastructure: dict[str, Infrastructure]
    services: dict[str, Service]
    proxy_base_port: int

    def waves(self) -> list[list[str]]:
        """Service names grouped by start wave, in wave order."""
        numbers = sorted({service.wave for service in self.services.values()})
        return [[name for name, service in self.services.items() if service.wave == number]
                for number in numbers]

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(self.services)
            raise KeyError(f"unknown service {name!r} (known: {known})") from None

    def edges(self) -> list[Edge]:
        """Every hop, in a stable order: per service, infrastructure first, then HTTP calls."""
        return [
            Edge(service.name, target)
            for service in self.services.values()
            for target in (*service.uses, *service.calls)
        ]

    def edge(self, name: str) -> Edge:
        """Find an edge by `caller->callee`, `caller:callee` or its proxy name."""
        for edge in self.edges():
            if name in (edge.name, edge.proxy_name, edge.name.replace("->", ":")):
                return edge
        raise KeyError(f"unknown edge {name!r} (see `microlab chaos list`)")


def load_topology(path: Path = TOPOLOGY_FILE) -> Topology:
    data = tomllib.loads(path.read_text())
    infrastructure = {
        name: Infrastructure(name=name, port=spec["port"], description=spec["description"],
                             external=spec.get("external", False))
        for name, spec in data["infrastructure"].items()
    }
    services = {
        name: Service(name=name, port=spec["port"], description=spec["description"],
                      uses=tuple(spec.get("uses", ())), calls=tuple(spec.get("calls", ())),
                      threads=spec.get("threads", 16), wave=spec.get("wave", 2))
        for name, spec in data["services"].items()
    }
    topology = Topology(infrastructure, services, data["proxies"]["base_port"])
    _validate(topology)
    return topology


def _validate(topology: Topology) -> None:
    for service in topology.services.values():
        for used in service.uses:
            if used not in topology.infrastructure:
                raise ValueError(f"{service.name} uses unknown infrastructure {used!r}")
        for called in service.calls:
            if called not in topology.services:
                raise ValueError(f"{service.name} calls unknown service {called!r}")
            if called == service.name:
                raise ValueError(f"{service.name} calls itself")


@dataclass(frozen=True)
class PortPlan:
    """The concrete ports of one run: one per service and infrastructure part, one per edge."""

    ports: dict[str, int]
    proxy_ports: dict[str, int] = field(default_factory=dict)

    def port(self, name: str) -> int:
        return self.ports[name]

    def url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.ports[name]}"

    def to_json(self) -> dict:
        return {"ports": self.ports, "proxy_ports": self.proxy_ports}

    @classmethod
    def from_json(cls, data: dict) -> PortPlan:
        return cls(dict(data["ports"]), dict(data["proxy_ports"]))


def free_ports(count: int) -> list[int]:
    """Ask the OS for `count` distinct free loopback ports.

    All sockets stay open until every port is chosen, so the same port is never handed out
    twice; another program could still grab one before we bind it, which is rare on loopback.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def plan_ports(topology: Topology, *, offset: int = 0, free: bool = False,
               amqp_url: str = DEFAULT_AMQP_URL) -> PortPlan:
    """Choose the ports of a run.

    External infrastructure (RabbitMQ) keeps the port of its URL: we connect to it, we do not
    start it.
    """
    names = [name for name, infra in topology.infrastructure.items() if not infra.external]
    names += list(topology.services)
    edges = [edge.name for edge in topology.edges()]
    if free:
        chosen = free_ports(len(names) + len(edges))
        ports = dict(zip(names, chosen[: len(names)]))
        proxy_ports = dict(zip(edges, chosen[len(names):]))
    else:
        defaults = {**topology.infrastructure, **topology.services}
        ports = {name: defaults[name].port + offset for name in names}
        proxy_ports = {name: topology.proxy_base_port + offset + index
                       for index, name in enumerate(edges)}
    for name, infra in topology.infrastructure.items():
        if infra.external:
            ports[name] = urlsplit(amqp_url).port or infra.port
    clash = set(ports.values()) & set(proxy_ports.values())
    if clash or len(set(ports.values())) != len(ports):
        raise ValueError(f"port plan has clashing ports: {sorted(clash) or ports}")
    return PortPlan(ports, proxy_ports)


def peer_env_name(service: str) -> str:
    """The env var holding the base URL of a peer service, e.g. PAYMENTS_URL."""
    return f"{service.upper()}_URL"


def _with_address(url: str, address: str) -> str:
    """`url` pointed at `address` ("host:port"), its credentials kept."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{address}" if userinfo else address
    return urlunsplit(parts._replace(netloc=netloc))


def wiring_env(service: Service, address_of: Callable[[str], str],
               amqp_url: str = DEFAULT_AMQP_URL) -> dict[str, str]:
    """Where a service finds its database, its broker and its peers: the same variables in
    every mode; `address_of(target)` ("host:port") says where each one is reached."""
    env = {}
    if "mongo" in service.uses:
        env["MONGO_URL"] = f"mongodb://{address_of('mongo')}/"
        env["MONGO_DB"] = service.name
    if "rabbitmq" in service.uses:
        env["AMQP_URL"] = _with_address(amqp_url, address_of("rabbitmq"))
    for callee in service.calls:
        env[peer_env_name(callee)] = f"http://{address_of(callee)}"
    if "registry" in service.calls:
        env["CONSUL_URL"] = env[peer_env_name("registry")]
    return env


def service_env(topology: Topology, plan: PortPlan, name: str, *, through_proxies: bool,
                amqp_url: str = DEFAULT_AMQP_URL) -> dict[str, str]:
    """The environment variables service `name` starts with in local mode."""
    service = topology.service(name)

    def address_of(target: str) -> str:
        edge = Edge(name, target).name
        return f"{LOOPBACK}:{plan.proxy_ports[edge] if through_proxies else plan.ports[target]}"

    return {"SERVICE_NAME": name, "HOST": LOOPBACK, "PORT": str(plan.ports[name]),
            "THREADS": str(service.threads), **wiring_env(service, address_of, amqp_url)}

"""Chaos on the edges of the topology, through the Toxiproxy HTTP API.

Every hop of the sandbox (`orders->payments`, `users->mongo`, `orders->rabbitmq`, ...) runs
through a proxy of a Toxiproxy-compatible server: our own in local mode, the real Toxiproxy in
compose mode. Both speak the same API, so this client, `toxiproxy-python` and the Chaos
Toolkit all work against either.

    chaos = ChaosClient(url)
    chaos.add_latency("orders->payments", 800, jitter_ms=100)   # slow a hop down
    chaos.cut("orders->payments")                                # refuse and drop connections
    chaos.restore("orders->payments")                            # back up
    chaos.reset()                                                # every edge back to normal
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from microlab.topology import LOOPBACK, PortPlan, Topology


class ChaosError(RuntimeError):
    """The chaos API refused a request; the message is its own."""


@dataclass(frozen=True)
class EdgeState:
    edge: str
    proxy: str
    listen: str
    upstream: str
    enabled: bool
    toxics: list[dict]


def edge_proxies(topology: Topology, plan: PortPlan) -> list[dict]:
    """The Toxiproxy `populate` body: one proxy per edge, from its port to its target's."""
    return [{"name": edge.proxy_name,
             "listen": f"{LOOPBACK}:{plan.proxy_ports[edge.name]}",
             "upstream": f"{LOOPBACK}:{plan.port(edge.callee)}",
             "enabled": True}
            for edge in topology.edges()]


class ChaosClient:
    def __init__(self, base_url: str, topology: Topology, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.topology = topology
        self.session = requests.Session()
        self.timeout = timeout

    def _call(self, method: str, path: str, json: object = None) -> requests.Response:
        response = self.session.request(method, f"{self.base_url}{path}", json=json,
                                        timeout=self.timeout)
        if response.status_code >= 400:
            raise ChaosError(f"{method} {path}: {response.status_code} {response.text.strip()}")
        return response

    def _proxy(self, edge_name: str) -> str:
        return self.topology.edge(edge_name).proxy_name

    def populate(self, proxies: list[dict]) -> None:
        self._call("POST", "/populate", proxies)

    def edges(self) -> list[EdgeState]:
        proxies = self._call("GET", "/proxies").json()
        by_proxy = {edge.proxy_name: edge for edge in self.topology.edges()}
        return [EdgeState(edge=by_proxy[name].name if name in by_proxy else name, proxy=name,
                          listen=proxy["listen"], upstream=proxy["upstream"],
                          enabled=proxy["enabled"], toxics=proxy["toxics"])
                for name, proxy in proxies.items()]

    def add_latency(self, edge: str, latency_ms: int, jitter_ms: int = 0,
                    stream: str = "downstream") -> None:
        """Delay data on the edge by latency_ms ± jitter_ms (replaces an earlier latency)."""
        proxy = self._proxy(edge)
        name = f"latency_{stream}"
        toxic = {"name": name, "type": "latency", "stream": stream, "toxicity": 1.0,
                 "attributes": {"latency": latency_ms, "jitter": jitter_ms}}
        existing = {t["name"] for t in self._call("GET", f"/proxies/{proxy}/toxics").json()}
        if name in existing:
            self._call("POST", f"/proxies/{proxy}/toxics/{name}", toxic)
        else:
            self._call("POST", f"/proxies/{proxy}/toxics", toxic)

    def cut(self, edge: str) -> None:
        """Take the edge down: new connections are refused, open ones closed."""
        self._call("POST", f"/proxies/{self._proxy(edge)}", {"enabled": False})

    def restore(self, edge: str) -> None:
        self._call("POST", f"/proxies/{self._proxy(edge)}", {"enabled": True})

    def remove_toxics(self, edge: str) -> None:
        """Take every toxic (latency, ...) off the edge; whether it is cut stays as it is."""
        proxy = self._proxy(edge)
        for toxic in self._call("GET", f"/proxies/{proxy}/toxics").json():
            self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic['name']}")

    def reset(self) -> None:
        """Every edge enabled, every toxic removed."""
        self._call("POST", "/reset")

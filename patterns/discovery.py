"""Service discovery: register yourself, find healthy peers, spread calls over them, fail over.

Protects against: peers at hard-coded addresses (a second instance, or one that moved, is never
used); calls to an instance that is down or sick (only instances whose every check passes are
used); every caller piling onto one instance (client-side load balancing); an instance dying
between two lookups (the call fails over to another one and the dead one is set aside); and the
registry itself going away (the last list it gave keeps being used).

It speaks Consul's HTTP API through `py-consul`, so the same code runs against a real Consul
(compose) and the sandbox's `registry` service (local mode): `CONSUL_URL` says which.

Registering — `Discovery.register(name, address=..., port=...)` returns a running `Registration`:

- `ttl` (10 s) — a TTL check that a heartbeat thread passes every `ttl / 3`. If the process hangs
  or dies, the check turns critical within `ttl` and callers stop getting this instance.
- `health_url` (none) — also an HTTP check the registry itself polls every `http_interval`
  (10 s), e.g. the service's /health: a process that still heartbeats while its database is
  down drops out too.
- `deregister_after` (60 s, Consul's minimum) — a registration critical this long is removed.
- A heartbeat that finds its check gone (the local registry keeps state in memory and was
  restarted) registers again. `stop()`, also run at interpreter exit, deregisters.

Finding — `Discovery.balancer(name)` returns a `Balancer`, a `resolve()` callable returning the
base URL of one healthy instance (pass it as `ServiceClient(resolve=...)`):

- `strategy` ("round_robin") — or "random", drawing from `rng` (seed it for a repeatable demo).
- `cache_for` (3 s) — how long a list of healthy instances is reused before the registry is asked
  again: shorter notices changes sooner, at one more registry call per interval. When the
  registry cannot be reached the last list is kept, and asked for again after `cache_for`.
- `eject_for` (10 s) — how long an instance that failed a call (`report_failure(url)`) is
  skipped. If every instance is ejected they are all tried again rather than none.
- `call(fn, attempts=3)` — runs `fn(base_url)` and, on a transient error (`is_transient`:
  connection trouble, timeouts, 502/503/504), ejects that instance and tries another.
- `clock` — where cache and ejection times are read; tests pass a `FakeClock`.

    discovery = Discovery(settings.consul_url)
    registration = discovery.register("orders", address="127.0.0.1", port=3003,
                                      health_url="http://127.0.0.1:3003/health")
    inventory = discovery.balancer("inventory")
    client = ServiceClient("inventory", resolve=inventory, retry=Retry(attempts=3))
    stock = inventory.call(lambda base_url: requests.get(f"{base_url}/api/v1/stock/sku-1",
                                                         timeout=2).json())
    registration.stop()

With `ServiceClient`, each retry asks `resolve()` again, so round robin lands it on the next
instance; to set a dead instance aside for every caller, also
`inventory.report_failure(error.url)` when a `ServiceUnavailable` comes back.
"""

from __future__ import annotations

import atexit
import logging
import math
import random
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import consul
import requests

from patterns.clock import SYSTEM_CLOCK, Clock
from patterns.retry import is_transient

T = TypeVar("T")
Strategy = Literal["round_robin", "random"]

log = logging.getLogger("discovery")


class RegistryUnavailable(ConnectionError):
    """The registry could not be asked (refused, timed out, or it answered 5xx)."""


class NoHealthyInstance(ConnectionError):
    """No instance of the service can take a call: none registered, none passing, or the
    registry is unreachable and there is no earlier list to fall back on."""

    def __init__(self, service: str, reason: str = "no instance passes its health checks") -> None:
        super().__init__(f"no healthy instance of {service}: {reason}")
        self.service = service


@dataclass(frozen=True)
class Instance:
    """One running copy of a service, as the registry knows it."""

    service_id: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    @classmethod
    def from_health_entry(cls, entry: Mapping[str, Any]) -> Instance:
        """From one item of GET /v1/health/service/<name>; an empty address means the node's."""
        service = entry["Service"]
        return cls(service_id=service["ID"],
                   address=service.get("Address") or entry["Node"]["Address"],
                   port=service["Port"], tags=tuple(service.get("Tags") or ()),
                   meta=dict(service.get("Meta") or {}))


Lookup = Callable[[str], Sequence[Instance]]  # service name -> its healthy instances


def consul_client(consul_url: str, *, timeout: float = 2.0) -> consul.Consul:
    """A py-consul client for a URL such as http://127.0.0.1:8500, with a short timeout."""
    url = urlsplit(consul_url if "//" in consul_url else f"//{consul_url}")
    client = consul.Consul(host=url.hostname or "127.0.0.1", port=url.port or 8500,
                           scheme=url.scheme or "http", connections_timeout=timeout)
    client.http.session.trust_env = False  # the registry is addressed directly, never proxied
    return client


class Balancer:
    """Picks one healthy instance of a service per call, from a briefly cached list."""

    def __init__(
        self,
        service: str,
        lookup: Lookup,
        *,
        strategy: Strategy = "round_robin",
        cache_for: float = 3.0,
        eject_for: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        if strategy not in ("round_robin", "random"):
            raise ValueError(f"strategy is 'round_robin' or 'random', not {strategy!r}")
        self.service = service
        self.strategy = strategy
        self.cache_for = cache_for
        self.eject_for = eject_for
        self._lookup = lookup
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._instances: tuple[Instance, ...] | None = None
        self._fetched_at = -math.inf
        self._ejected_until: dict[str, float] = {}
        self._turn = 0

    def __call__(self) -> str:
        return self.resolve()

    def resolve(self) -> str:
        """The base URL (http://host:port) of the instance to call next."""
        return self.pick().base_url

    def pick(self, *, avoid: Collection[str] = ()) -> Instance:
        """The instance to call next, skipping ejected ones and base URLs in `avoid`."""
        with self._lock:
            candidates = [instance for instance in self._healthy_locked()
                          if instance.base_url not in avoid]
            if not candidates:
                raise NoHealthyInstance(self.service, "every healthy instance was tried"
                                        if avoid else "no instance passes its health checks")
            now = self._clock.monotonic()
            usable = [instance for instance in candidates
                      if self._ejected_until.get(instance.base_url, -math.inf) <= now]
            usable = usable or candidates  # all ejected: any chance beats none
            if self.strategy == "random":
                return self._rng.choice(usable)
            self._turn += 1
            return usable[(self._turn - 1) % len(usable)]

    def instances(self) -> tuple[Instance, ...]:
        """The healthy instances, from the cache while it is fresh."""
        with self._lock:
            return self._healthy_locked()

    def report_failure(self, url: str) -> None:
        """Skip the instance serving `url` (any URL on it) for `eject_for` seconds."""
        parts = urlsplit(url)
        with self._lock:
            self._ejected_until[f"{parts.scheme}://{parts.netloc}"] = (
                self._clock.monotonic() + self.eject_for)

    def call(self, fn: Callable[[str], T], *, attempts: int = 3) -> T:
        """`fn(base_url)` on one instance; on a transient error, eject it and try another."""
        if attempts < 1:
            raise ValueError("attempts counts the first try, so it is at least 1")
        tried: list[str] = []
        last_error: Exception | None = None
        for _ in range(attempts):
            try:
                base_url = self.pick(avoid=tried).base_url
            except NoHealthyInstance:
                if last_error is None:
                    raise
                break
            try:
                return fn(base_url)
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("instance failed; failing over", extra={
                    "service": self.service, "instance": base_url, "error": repr(error)[:200]})
                self.report_failure(base_url)
                tried.append(base_url)
                last_error = error
        assert last_error is not None
        raise last_error

    def _healthy_locked(self) -> tuple[Instance, ...]:
        now = self._clock.monotonic()
        if now - self._fetched_at >= self.cache_for:
            self._fetched_at = now  # failed or not, ask again only after cache_for
            try:
                self._instances = tuple(sorted(self._lookup(self.service),
                                               key=lambda instance: instance.service_id))
            except ConnectionError as error:
                if self._instances is None:
                    raise NoHealthyInstance(self.service, f"registry unreachable ({error})") \
                        from error
                log.warning("registry unreachable; using the last list of instances",
                            extra={"service": self.service, "error": str(error)[:200]})
        return self._instances or ()


class Registration:
    """This process in the registry, kept alive by a heartbeat thread until `stop()`."""

    def __init__(
        self,
        client: consul.Consul,
        name: str,
        *,
        address: str,
        port: int,
        service_id: str | None = None,
        tags: Sequence[str] = (),
        meta: Mapping[str, str] | None = None,
        ttl: float = 10.0,
        health_url: str | None = None,
        http_interval: float = 10.0,
        deregister_after: float = 60.0,
    ) -> None:
        self.client = client
        self.name = name
        self.address = address
        self.port = port
        self.service_id = service_id or f"{name}-{address}-{port}"
        self.check_id = f"{self.service_id}:ttl"
        self.tags = list(tags)
        self.meta = dict(meta or {})
        self.ttl = ttl
        self.health_url = health_url
        self.http_interval = http_interval
        self.deregister_after = deregister_after
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{name}", daemon=True)

    def start(self) -> Registration:
        """Register and start heartbeating. A registry that is down now is retried by the
        heartbeat; a registration the registry refuses (a 4xx) raises here."""
        try:
            self.register()
            self.heartbeat()
        except requests.RequestException as error:
            log.warning("registry unreachable; the heartbeat will register later",
                        extra={"service": self.name, "error": str(error)[:200]})
        self._thread.start()
        atexit.register(self.stop)
        return self

    def register(self) -> None:
        checks = [{"CheckID": self.check_id, "Name": f"{self.name} heartbeat",
                   "TTL": _go_duration(self.ttl),
                   "DeregisterCriticalServiceAfter": _go_duration(self.deregister_after)}]
        if self.health_url:
            checks.append({"CheckID": f"{self.service_id}:http", "Name": f"{self.name} health",
                           "HTTP": self.health_url, "Interval": _go_duration(self.http_interval),
                           "Timeout": _go_duration(min(self.http_interval, 5.0)),
                           "DeregisterCriticalServiceAfter": _go_duration(self.deregister_after)})
        self.client.agent.service.register(
            self.name, service_id=self.service_id, address=self.address, port=self.port,
            tags=self.tags, meta=self.meta, check=checks[0], extra_checks=checks[1:])
        log.info("registered", extra={"service": self.name, "service_id": self.service_id,
                                      "address": self.address, "port": self.port})

    def heartbeat(self) -> None:
        """Pass the TTL check once; register again if the registry no longer knows it."""
        if not self.client.agent.check.ttl_pass(self.check_id, notes="heartbeat"):
            log.warning("registration lost; registering again",
                        extra={"service": self.name, "service_id": self.service_id})
            self.register()
            self.client.agent.check.ttl_pass(self.check_id, notes="heartbeat")

    def stop(self) -> None:
        """Stop heartbeating and deregister, so callers stop getting this instance at once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        atexit.unregister(self.stop)
        if self._thread.is_alive():
            self._thread.join(timeout=self.ttl)
        try:
            self.client.agent.service.deregister(self.service_id)
        except (requests.RequestException, consul.ConsulException) as error:
            log.warning("could not deregister; the TTL check will expire instead",
                        extra={"service": self.name, "error": str(error)[:200]})

    def _beat(self) -> None:
        while not self._stopped.wait(self.ttl / 3):
            try:
                self.heartbeat()
            except (requests.RequestException, consul.ConsulException) as error:
                log.warning("heartbeat failed", extra={"service": self.name,
                                                       "error": str(error)[:200]})


class Discovery:
    """The registry at `consul_url`: register this process, look up and balance over peers."""

    def __init__(self, consul_url: str, *, timeout: float = 2.0) -> None:
        self.client = consul_client(consul_url, timeout=timeout)

    def healthy(self, service: str) -> list[Instance]:
        """Every instance of `service` whose checks all pass (`passing=True`)."""
        try:
            _index, entries = self.client.health.service(service, passing=True)
        except (requests.RequestException, consul.ConsulException) as error:
            raise RegistryUnavailable(f"registry unreachable: {error}") from error
        return [Instance.from_health_entry(entry) for entry in entries]

    def balancer(self, service: str, **knobs: Any) -> Balancer:
        """A `Balancer` over the healthy instances of `service` (knobs: see Balancer)."""
        return Balancer(service, self.healthy, **knobs)

    def register(self, name: str, *, address: str, port: int, **knobs: Any) -> Registration:
        """Register this process and keep it registered (knobs: see Registration)."""
        return Registration(self.client, name, address=address, port=port, **knobs).start()


def _go_duration(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"

"""Service settings from the environment: one object per service, no hard-coded hosts.

Protects against: configuration scattered through the code, and services that only run on the
machine they were written on. The supervisor (local mode) and docker compose set the same
variables with different values; the code never knows which mode it is in.

Variables: SERVICE_NAME, HOST, PORT, ADVERTISE_HOST, ADVERTISE_PORT, MICROLAB_ENV (dev by
default), MONGO_URL, MONGO_DB, AMQP_URL, BUS_NAMESPACE (a prefix on exchange and queue names),
CONSUL_URL, REDIS_URL, THREADS, BREAKER_FAILURE_THRESHOLD and BREAKER_RECOVERY_TIMEOUT
(defaults of the breakers on calls to peers), and one <PEER>_URL per service called (e.g.
PAYMENTS_URL).

Where a service listens and where it is reached are two settings, because in a container they
differ: it must listen on every interface, and no peer can call "0.0.0.0".

- HOST (127.0.0.1), PORT — what the server binds. 0.0.0.0 or :: (a wildcard) listens on every
  interface.
- ADVERTISE_HOST — the address the service registers and its registry health check calls: the
  name or IP its peers reach it at (in compose, its service or container name). Default: HOST
  when HOST is a concrete address; the machine's hostname when HOST is a wildcard, because a
  container's hostname is its container id, which Docker's DNS resolves for the peers on its
  network (`hostname:` in compose can make it the service name). A wildcard here is refused.
- ADVERTISE_PORT (PORT) — the port peers call, when it is not the one bound (a published port).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class SettingsError(ValueError):
    """A required setting is missing or malformed."""


def number_from_env(environ: Mapping[str, str], name: str, default: Any, kind: type = float,
                    minimum: float = 0) -> Any:
    """The number variable `name` holds (of `kind`, above `minimum`), or `default` when it is
    unset or empty; a SettingsError naming the variable when it holds anything else."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name} must be {what}, not {raw!r}") from None
    if value <= minimum:
        raise SettingsError(f"{name} must be greater than {minimum:g}, not {raw!r}")
    return value


WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
"""Bind addresses meaning "every interface": fine to listen on, useless to be called at."""


def advertised_host_for(host: str, advertise_host: str | None = None, *,
                        hostname: Callable[[], str] = socket.gethostname) -> str:
    """The address peers reach a service bound to `host` at: `advertise_host` when given,
    else `host` itself, unless that is a wildcard — then this machine's `hostname()`."""
    if advertise_host:
        if advertise_host in WILDCARD_HOSTS:
            raise SettingsError(f"ADVERTISE_HOST must be an address peers can reach (a name or "
                                f"an IP), not the wildcard {advertise_host!r}")
        return advertise_host
    return hostname() if host in WILDCARD_HOSTS else host


@dataclass(frozen=True)
class ServiceSettings:
    name: str
    port: int
    host: str = "127.0.0.1"
    env: str = "dev"
    mongo_url: str | None = None
    mongo_db: str | None = None
    amqp_url: str | None = None
    consul_url: str | None = None
    redis_url: str | None = None
    bus_namespace: str = ""
    peers: dict[str, str] = field(default_factory=dict)
    threads: int = 16
    breaker_failure_threshold: int = 5
    breaker_recovery_timeout: float = 30.0
    advertise_host: str | None = None  # as set; None: derived (advertised_host_for)
    advertise_port: int | None = None  # as set; None: port
    supervised: bool = False  # MICROLAB_SUPERVISED=1: the sandbox's supervisor restarts us

    def __post_init__(self) -> None:
        if self.advertise_host:
            advertised_host_for(self.host, self.advertise_host)  # refuses a wildcard, at start

    @property
    def dev_mode(self) -> bool:
        return self.env == "dev"

    @property
    def advertised_host(self) -> str:
        """The address this service registers and peers call (ADVERTISE_HOST, or derived)."""
        return advertised_host_for(self.host, self.advertise_host)

    @property
    def advertised_port(self) -> int:
        return self.port if self.advertise_port is None else self.advertise_port

    @property
    def advertised_url(self) -> str:
        """http://host:port of this service as its peers reach it (IPv6 in brackets)."""
        host = self.advertised_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.advertised_port}"

    def peer_url(self, service: str) -> str:
        try:
            return self.peers[service]
        except KeyError:
            raise SettingsError(f"{service.upper()}_URL is not set for {self.name}") from None

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] = os.environ) -> ServiceSettings:
        port = environ.get("PORT")
        if not port or not port.isdigit():
            raise SettingsError(
                f"PORT is not set (or not a number) for {name}: start services with "
                "`make up`, or set PORT and the URLs of what the service uses")
        threads = environ.get("THREADS", "16")
        if not threads.isdigit() or int(threads) < 1:
            raise SettingsError(f"THREADS must be a whole number >= 1, not {threads!r}")
        advertise_port = environ.get("ADVERTISE_PORT") or None
        if advertise_port is not None and not (advertise_port.isdigit()
                                               and 0 < int(advertise_port) <= 65535):
            raise SettingsError(f"ADVERTISE_PORT must be a port number (1-65535), not "
                                f"{advertise_port!r}")
        breaker = {}
        for field_name, variable, kind in (
                ("breaker_failure_threshold", "BREAKER_FAILURE_THRESHOLD", int),
                ("breaker_recovery_timeout", "BREAKER_RECOVERY_TIMEOUT", float)):
            if variable in environ:
                try:
                    breaker[field_name] = kind(environ[variable])
                except ValueError:
                    raise SettingsError(f"{variable} must be a number, not "
                                        f"{environ[variable]!r}") from None
        peers = {key[: -len("_URL")].lower(): value for key, value in environ.items()
                 if key.endswith("_URL") and key not in _INFRA_URLS}
        return cls(
            name=environ.get("SERVICE_NAME", name),
            port=int(port),
            host=environ.get("HOST", "127.0.0.1"),
            env=environ.get("MICROLAB_ENV", "dev"),
            mongo_url=environ.get("MONGO_URL"),
            mongo_db=environ.get("MONGO_DB", name),
            amqp_url=environ.get("AMQP_URL"),
            consul_url=environ.get("CONSUL_URL"),
            redis_url=environ.get("REDIS_URL"),
            bus_namespace=environ.get("BUS_NAMESPACE", ""),
            peers=peers,
            threads=int(threads),
            advertise_host=environ.get("ADVERTISE_HOST") or None,
            advertise_port=int(advertise_port) if advertise_port else None,
            supervised=environ.get("MICROLAB_SUPERVISED") == "1",
            **breaker,
        )


_INFRA_URLS = {"MONGO_URL", "AMQP_URL", "CONSUL_URL", "REDIS_URL", "TOXIPROXY_URL",
               "OTEL_EXPORTER_OTLP_ENDPOINT"}

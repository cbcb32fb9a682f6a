"""Service settings from the environment: one object per service, no hard-coded hosts.

Protects against: configuration scattered through the code, and services that only run on the
machine they were written on. The supervisor (local mode) and docker compose set the same
variables with different values; the code never knows which mode it is in.

Variables: SERVICE_NAME, HOST, PORT, MICROLAB_ENV (dev by default), MONGO_URL, MONGO_DB,
AMQP_URL, BUS_NAMESPACE (a prefix on exchange and queue names), CONSUL_URL, REDIS_URL,
THREADS, BREAKER_FAILURE_THRESHOLD and BREAKER_RECOVERY_TIMEOUT (defaults of the breakers on
calls to peers), and one <PEER>_URL per service called (e.g. PAYMENTS_URL).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


class SettingsError(ValueError):
    """A required setting is missing or malformed."""


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

    @property
    def dev_mode(self) -> bool:
        return self.env == "dev"

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
            **breaker,
        )


_INFRA_URLS = {"MONGO_URL", "AMQP_URL", "CONSUL_URL", "REDIS_URL", "TOXIPROXY_URL",
               "OTEL_EXPORTER_OTLP_ENDPOINT"}

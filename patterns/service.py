"""A service's composition root: everything it runs besides its own domain, wired once.

Protects against: each service growing its own copy of the connection code, each a little
different and a little wrong. A service builds one `ServiceKit` in `create_app(settings)` and
gets, from its settings alone:

- `kit.app` — the Flask app (request ids, JSON errors, /health with its dependencies, tracing);
- `kit.api` — declared, validated routes and the OpenAPI document (`patterns.api`);
- `kit.db` — its own MongoDB database (database per service);
- `kit.bus`, `kit.outbox(name)`, `kit.consume(...)` — events through the transactional outbox
  and idempotent-ready consumers (`patterns.bus`, `patterns.outbox`);
- `kit.peer(name)` — an HTTP client for another service, through the URL the environment gives
  (the chaos proxy of that edge locally) or the registry, with timeouts, a circuit breaker per
  peer and budgeted retries for idempotent calls;
- `kit.tokens` — JWT issue/verify with the shared secret;
- `GET /admin/breakers` (admin) — the state of each peer's circuit breaker;
- registration in the registry with a heartbeat, when CONSUL_URL is set, at the advertised
  address (ADVERTISE_HOST/ADVERTISE_PORT, see `patterns.settings`), not the bound one.

`kit.start()` (called at the end of `create_app`) starts the background work — outbox relay,
consumers, heartbeat — and arranges for it to stop when the process exits. Nothing starts in
a gunicorn master: `create_app` runs in the worker, after the fork (see `patterns.serve`).
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask
from pymongo.database import Database

from patterns.api import Api
from patterns.auth import Claims, Tokens, secret_from_env
from patterns.breaker import BreakerRegistry, CircuitBreaker, State
from patterns.bus import Binding, Bus, Consumer, Handler
from patterns.discovery import Discovery, Registration
from patterns.http import ServiceClient, ServiceError
from patterns.logs import REQUEST_ID_HEADER, request_id_var
from patterns.mongo import connect_database, ping, wait_for_database
from patterns.outbox import Outbox, OutboxRelay
from patterns.retry import Retry, RetryBudget
from patterns.settings import ServiceSettings
from patterns.tracing import inject_headers, setup_tracing
from patterns.web import create_service_app

log = logging.getLogger(__name__)

TOKEN_ISSUER = "microlab-users"
TOKEN_AUDIENCE = "microlab"


def outgoing_context() -> dict[str, str]:
    """Headers every outgoing call and event carries: the request id and the trace context."""
    request_id = request_id_var.get()
    return inject_headers({REQUEST_ID_HEADER: request_id} if request_id else {})


def _log_breaker_change(breaker: CircuitBreaker, old: State, new: State) -> None:
    log.warning("circuit breaker changed state",
                extra={"breaker": breaker.name, "from": str(old), "to": str(new)})


def counts_against_peer(error: BaseException) -> bool:
    """A peer's 5xx and silence count against its breaker; its 4xx answers do not."""
    if isinstance(error, ServiceError):
        return error.status >= 500
    return True


class ServiceKit:
    def __init__(self, settings: ServiceSettings, *, title: str, description: str = "",
                 health_checks: dict[str, Callable[[], None]] | None = None) -> None:
        self.settings = settings
        self.tokens = Tokens(secret_from_env(), issuer=TOKEN_ISSUER, audience=TOKEN_AUDIENCE)
        self.db: Database | None = connect_database(settings) if settings.mongo_url else None
        if self.db is not None:
            wait_for_database(self.db)  # the stores create their indexes next
        self.bus: Bus | None = (Bus(settings.amqp_url, headers_provider=outgoing_context,
                                    namespace=settings.bus_namespace)
                                if settings.amqp_url else None)
        checks = dict(health_checks or {})
        if self.db is not None:
            checks["mongo"] = lambda: ping(self.db)
        if self.bus is not None:
            checks["consumers"] = self._check_consumers
        self.app: Flask = create_service_app(settings.name, health_checks=checks)
        self.app.extensions["kit"] = self  # so tests and tools can reach it from the app
        setup_tracing(settings.name, self.app)
        self.api = Api(self.app, title=title, description=description, tokens=self.tokens)
        self.breakers = BreakerRegistry(listeners=(_log_breaker_change,),
                                        is_failure=counts_against_peer,
                                        failure_threshold=settings.breaker_failure_threshold,
                                        recovery_timeout=settings.breaker_recovery_timeout)
        self.retry_budget = RetryBudget()
        self._outboxes: list[Outbox] = []
        self._consumers: list[Consumer] = []
        self._peers: dict[str, ServiceClient] = {}
        self._relay: OutboxRelay | None = None
        self._registration: Registration | None = None
        self._on_stop: list[Callable[[], None]] = []
        self.discovery = Discovery(settings.consul_url) if settings.consul_url else None

        @self.api.get("/admin/breakers", auth="admin",
                      summary="This service's circuit breakers, one per peer it calls")
        def breakers(user: Claims) -> dict:
            return self.breakers.snapshot()

    # -- building blocks -------------------------------------------------------------------
    def collection(self, name: str):
        if self.db is None:
            raise RuntimeError(f"{self.settings.name} has no MONGO_URL")
        return self.db[name]

    def outbox(self, collection_name: str) -> Outbox:
        """An outbox over one of this service's collections; the kit's relay publishes it."""
        outbox = Outbox(self.collection(collection_name), headers_provider=outgoing_context)
        self._outboxes.append(outbox)
        return outbox

    def consume(self, queue: str, handler: Handler, *bindings: Binding, **knobs: Any) -> None:
        """Handle events from `bindings` ((exchange, routing pattern) pairs) on `queue`."""
        if self.bus is None:
            raise RuntimeError(f"{self.settings.name} has no AMQP_URL")
        self._consumers.append(self.bus.consumer(queue, handler, *bindings, **knobs))

    def peer(self, name: str, *, read_timeout: float = 5.0, retries: int = 3,
             **breaker_settings: Any) -> ServiceClient:
        """The client for peer service `name` (one per peer, shared by all threads)."""
        if name not in self._peers:
            if name in self.settings.peers:
                target: dict[str, Any] = {"base_url": self.settings.peers[name]}
            elif self.discovery is not None:
                target = {"resolve": self.discovery.balancer(name)}
            else:
                target = {"base_url": self.settings.peer_url(name)}  # raises: not configured
            self._peers[name] = ServiceClient(
                name, **target, caller=self.settings.name, read_timeout=read_timeout,
                context=outgoing_context, breaker=self.breakers.get(name, **breaker_settings),
                retry=Retry(attempts=retries, budget=self.retry_budget))
        return self._peers[name]

    # -- lifecycle -------------------------------------------------------------------------
    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run `callback` when the kit stops (a service's own threads, pools, sessions)."""
        self._on_stop.append(callback)

    def start(self) -> ServiceKit:
        if self.bus is not None and self._outboxes:
            self._relay = OutboxRelay(self.bus, *self._outboxes).start()
        for consumer in self._consumers:
            consumer.start()
        if self.discovery is not None:
            settings = self.settings  # registered where peers reach it, not where it binds
            self._registration = self.discovery.register(
                settings.name, address=settings.advertised_host, port=settings.advertised_port,
                health_url=f"{settings.advertised_url}/health")
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        for callback in reversed(self._on_stop):
            try:
                callback()
            except Exception:  # one failing hook must not keep the others from running
                log.exception("stop hook failed")
        self._on_stop.clear()
        atexit.unregister(self.stop)
        if self._registration is not None:
            self._registration.stop()
        for consumer in self._consumers:
            consumer.stop(timeout=10)
        if self._relay is not None:
            self._relay.stop(timeout=10)
        for client in self._peers.values():
            client.close()

    def _check_consumers(self) -> None:
        stopped = [consumer.queue for consumer in self._consumers if not consumer.running]
        if stopped:
            raise ConnectionError(f"consumers not running: {', '.join(stopped)}")

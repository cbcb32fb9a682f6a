"""Database per service: each service owns one MongoDB database and no one else touches it.

Protects against: services coupled through shared tables, where one team's schema change breaks
another's queries. A service reaches its data only through its own database (MONGO_DB, named
after the service); other services ask it over HTTP or learn from its events.

Knobs: MONGO_URL (the embedded server locally, `mongo:7` in compose), MONGO_DB, and short
timeouts so a database outage surfaces as a fast error instead of a hung request. At start, a
service waits for its database (`wait_for_database`, 30 s) instead of dying on the first
timeout: under compose, "mongo is healthy" does not mean every path to it answers in 2 s while a
dozen containers boot on two cores.
"""

from __future__ import annotations

import logging
import time

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from patterns.settings import ServiceSettings, SettingsError

log = logging.getLogger(__name__)


def connect_database(settings: ServiceSettings, timeout_ms: int = 2000) -> Database:
    """The service's own database; the client connects lazily, on first use."""
    if not settings.mongo_url:
        raise SettingsError(f"MONGO_URL is not set for {settings.name}")
    # A pool no bigger than the threads that can use it at once (the request threads, plus the
    # relay, consumers and health checks), whose idle connections close: otherwise each slow
    # spell of the database leaves up to 100 open connections behind. The driver's own check of
    # the server every 30 s instead of 10 s (idle CPU): a failed operation makes it check again
    # at once, so an outage is noticed as fast.
    client: MongoClient = MongoClient(
        settings.mongo_url, appname=settings.name, serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms * 5,
        maxPoolSize=settings.threads + 8, maxIdleTimeMS=30_000, heartbeatFrequencyMS=30_000)
    return client[settings.mongo_db or settings.name]


def ping(database: Database) -> None:
    """A health check: raises when the database does not answer."""
    database.client.admin.command("ping")


def wait_for_database(database: Database, within: float = 30.0, pause: float = 0.5) -> None:
    """Ping until the database answers; raise TimeoutError if it has not within `within` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            ping(database)
            return
        except PyMongoError as error:  # refused, timed out, no server selected yet
            if time.monotonic() + pause >= deadline:
                raise TimeoutError(f"no MongoDB answered at {_address(database)} within "
                                   f"{within:.0f} s: {error}") from None
            log.warning("waiting for the database", extra={"error": str(error)[:200]})
            time.sleep(pause)


def _address(database: Database) -> str:
    host, port = next(iter(database.client.topology_description.server_descriptions()))
    return f"{host}:{port}"

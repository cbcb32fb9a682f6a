"""Database per service: each service owns one MongoDB database and no one else touches it.

Protects against: services coupled through shared tables, where one team's schema change breaks
another's queries. A service reaches its data only through its own database (MONGO_DB, named
after the service); other services ask it over HTTP or learn from its events.

Knobs: MONGO_URL (the embedded server locally, `mongo:7` in compose), MONGO_DB, and short
timeouts so a database outage surfaces as a fast error instead of a hung request.
"""

from __future__ import annotations

from pymongo import MongoClient
from pymongo.database import Database

from patterns.settings import ServiceSettings, SettingsError


def connect_database(settings: ServiceSettings, timeout_ms: int = 2000) -> Database:
    """The service's own database; the client connects lazily, on first use."""
    if not settings.mongo_url:
        raise SettingsError(f"MONGO_URL is not set for {settings.name}")
    client: MongoClient = MongoClient(
        settings.mongo_url, appname=settings.name, serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms * 5)
    return client[settings.mongo_db or settings.name]


def ping(database: Database) -> None:
    """A health check: raises when the database does not answer."""
    database.client.admin.command("ping")

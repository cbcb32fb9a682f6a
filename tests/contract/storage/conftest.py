"""Fixtures of the storage contract: which MongoDB the suite talks to, a fresh database per test.

- MONGO_URL set: the suite runs unchanged against that server (e.g. `mongo:7` from compose).
- MONGO_URL unset: one embedded nx-27017 is started for the session on a free loopback port, in
  a temporary data directory, and stopped afterwards.

Tests marked `nx_gap("...")` describe MongoDB behaviour that nx-27017 gets wrong. On the
embedded server they are strict xfails (they show up in the summary, and start failing the day
nx-27017 fixes the gap, so the mark gets removed); against a real MongoDB they are plain tests.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from microlab.embedded_mongo import running_mongo, wait_for_mongo

EMBEDDED_SERVER = "nx-27017 0.8.1"


@dataclass(frozen=True)
class MongoTarget:
    """The server under test: its URL, and whether this suite started it (and may restart it)."""

    url: str
    embedded: bool


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "nx_gap(reason): MongoDB behaviour the embedded server gets wrong (strict xfail there)",
    )


@pytest.fixture(scope="session")
def mongo_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoTarget]:
    url = os.environ.get("MONGO_URL")
    if url:
        wait_for_mongo(url, timeout=10)
        yield MongoTarget(url=url, embedded=False)
        return
    with running_mongo(tmp_path_factory.mktemp("mongo-data")) as embedded_url:
        yield MongoTarget(url=embedded_url, embedded=True)


@pytest.fixture(scope="session")
def mongo_url(mongo_target: MongoTarget) -> str:
    return mongo_target.url


@pytest.fixture(scope="session")
def client(mongo_target: MongoTarget) -> Iterator[MongoClient]:
    mongo_client: MongoClient = MongoClient(mongo_target.url, serverSelectionTimeoutMS=5000)
    yield mongo_client
    mongo_client.close()


@pytest.fixture(autouse=True)
def _expect_known_gaps(request: pytest.FixtureRequest, mongo_target: MongoTarget) -> None:
    marker = request.node.get_closest_marker("nx_gap")
    if marker is not None and mongo_target.embedded:
        request.applymarker(
            pytest.mark.xfail(reason=f"{EMBEDDED_SERVER}: {marker.args[0]}", strict=True))


@pytest.fixture
def db(client: MongoClient, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A database of this test's own, dropped afterwards (names stay under MongoDB's 64 bytes)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", request.node.name.removeprefix("test_"))[:40]
    name = f"contract_{slug}_{uuid.uuid4().hex[:8]}"
    yield client[name]
    client.drop_database(name)


@pytest.fixture
def own_data_dir(mongo_target: MongoTarget, tmp_path: Path) -> Path:
    """A data directory for servers a test starts and stops itself (embedded mode only)."""
    if not mongo_target.embedded:
        pytest.skip("MONGO_URL names a server this suite did not start, so it cannot stop and "
                    "restart it; the restart contract is checked in embedded mode only")
    return tmp_path / "data"

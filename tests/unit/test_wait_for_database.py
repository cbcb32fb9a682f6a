"""A service waits for its database at start instead of dying on the first timeout."""

from __future__ import annotations

import logging
import subprocess
import threading
import time

import pytest
from pymongo import MongoClient

from microlab.embedded_mongo import mongo_command
from microlab.topology import LOOPBACK, free_ports
from patterns.mongo import wait_for_database


def client_for(port: int) -> MongoClient:
    return MongoClient(f"mongodb://{LOOPBACK}:{port}/", serverSelectionTimeoutMS=300,
                       connectTimeoutMS=300)


def test_waits_for_a_database_that_comes_up_late(tmp_path, caplog):
    port = free_ports(1)[0]
    started: list[subprocess.Popen] = []
    late = threading.Timer(1.5, lambda: started.append(subprocess.Popen(
        mongo_command(tmp_path, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    late.start()
    try:
        with caplog.at_level(logging.WARNING, logger="patterns.mongo"), client_for(port) as client:
            wait_for_database(client.admin, within=20, pause=0.1)
            client.admin.command("ping")
        assert started, "returned before the server was even started"
        assert any(r.getMessage() == "waiting for the database" for r in caplog.records)
    finally:
        late.cancel()
        for process in started:
            process.terminate()
            process.wait(timeout=10)


def test_gives_up_after_its_deadline_and_names_the_address():
    port = free_ports(1)[0]
    begun = time.monotonic()
    with client_for(port) as client, pytest.raises(TimeoutError, match=f"{port} within 1 s"):
        wait_for_database(client.admin, within=1.0, pause=0.1)
    assert 0.9 < time.monotonic() - begun < 5

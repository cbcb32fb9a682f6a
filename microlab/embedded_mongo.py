"""The embedded MongoDB of local mode: nx-27017, a MongoDB wire-protocol server over SQLite.

Services talk to it with plain pymongo, exactly as they would to `mongo:7` in compose mode; only
MONGO_URL differs. Why this server and not another is in docs/embedded-mongodb.md.

- `mongo_command()` is what the supervisor runs (it owns the process like any other).
- `wait_for_mongo()` blocks until the server answers a ping.
- `running_mongo()` starts one for a test or a notebook and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from pymongo import MongoClient

from microlab.topology import LOOPBACK, free_ports
from patterns.mongo import wait_for_database


def mongo_command(data_dir: Path, port: int, host: str = LOOPBACK) -> list[str]:
    """The command line of an embedded server keeping one SQLite file per database in data_dir."""
    return [
        sys.executable, str(Path(__file__).with_name("mongo_server.py")),
        "--data-dir", str(data_dir),
        "--host", host,
        "--port", str(port),
        # Its default pid file is shared by everyone in /tmp; keep each server's own. Its log
        # also goes to stdout, which the supervisor keeps, so the extra log file is dropped.
        "--pid-file", str(data_dir / "nx-27017.pid"),
        "--log-file", os.devnull,
        # A thread per connection instead of an event loop handing each operation to a thread
        # pool: 227 instead of 367 µs of server CPU per operation (3000 inserts, finds, updates).
        "--threaded",
    ]


def wait_for_mongo(url: str, timeout: float = 15.0) -> None:
    """Return once a MongoDB server at url answers `ping`; raise TimeoutError otherwise."""
    with MongoClient(url, serverSelectionTimeoutMS=300, connectTimeoutMS=300) as client:
        wait_for_database(client.admin, within=timeout, pause=0.1)


@contextlib.contextmanager
def running_mongo(data_dir: Path, port: int | None = None) -> Iterator[str]:
    """Run an embedded server for the duration of a `with` block; yields its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_ports(1)[0]
    url = f"mongodb://{LOOPBACK}:{port}/"
    process = subprocess.Popen(mongo_command(data_dir, port), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_mongo(url)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

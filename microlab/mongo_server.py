"""Run the embedded MongoDB (nx-27017) with its logging turned down and its memory bounded.

At INFO it writes two lines for every admin command (every health-check ping), which would
drown the services' logs. MONGO_LOG_LEVEL=INFO brings them back when debugging the server.

Its memory, measured over a 10-minute soak (`make soak`), grew by a third after the first
minutes, for two reasons, both bounded here:

- each database is a SQLite file with a page cache of its own that grows with the data, up to
  2 MiB a database. SQLite's soft heap limit (process-wide, MONGO_CACHE_MIB, 8 MiB by default)
  caps the caches together: past it SQLite reuses its pages instead of asking for more;
- the server runs a thread per connection, and glibc gives threads malloc arenas of their own
  (up to eight per core), each keeping freed memory as its high-water mark. With two arenas the
  server grew 2.4 % from minute 2 to 10 instead of 11 %.

It also counts the operations it serves, and reports them as a real mongod does, in the
`opcounters` of `serverStatus` (inserts per document, updates and deletes per statement, finds as
`query`, everything else as `command`): `make bench` reads them to say how many database
operations an order costs, the same way in local and compose mode.
"""

import ctypes
import ctypes.util
import functools
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from typing import Any

from nx_27017.handler import NeoSQLiteHandler
from nx_27017.nx_27017 import main

M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def bound_memory(cache_mib: float, arenas: int = 2) -> None:
    any_connection = sqlite3.connect(":memory:")  # the limit is the whole process's
    any_connection.execute(f"PRAGMA soft_heap_limit={int(cache_mib * 2**20)}")
    any_connection.close()
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass  # not glibc (musl, macOS): its allocator, its own ways


OPCOUNTERS = ("insert", "query", "update", "delete", "getmore", "command")  # as mongod has them
OPCOUNTER = {"insert": "insert", "find": "query", "update": "update", "delete": "delete",
             "getMore": "getmore"}
STATEMENTS = {"insert": "documents", "update": "updates", "delete": "deletes"}


def operation(message: dict[str, Any]) -> tuple[str, int]:
    """The `opcounters` field a parsed OP_MSG counts in, and by how much."""
    body: dict[str, Any] = {}
    payload = 0  # documents or statements sent beside the command (OP_MSG section kind 1)
    for kind, section in message.get("sections", ()):
        if kind == "body" and isinstance(section, dict):
            body = section
        elif kind == "payload":  # {identifier: documents}, e.g. {"documents": [...]}
            payload += sum(len(documents) for documents in section.values())
    name = next(iter(body), "")
    if name in STATEMENTS:
        return OPCOUNTER[name], max(payload or len(body.get(STATEMENTS[name]) or ()), 1)
    return OPCOUNTER.get(name, "command"), 1


def count_operations(handler: type[NeoSQLiteHandler]) -> None:
    """Count what `handler` serves from now on; `serverStatus` answers with the counts."""
    counts = dict.fromkeys(OPCOUNTERS, 0)
    lock = threading.Lock()  # one thread per connection

    def counted(serve: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(serve)
        def wrapper(self: NeoSQLiteHandler, message: dict[str, Any], *args: Any) -> Any:
            field, count = operation(message)
            with lock:
                counts[field] += count
            return serve(self, message, *args)
        return wrapper

    server_status = handler._handle_server_status

    @functools.wraps(server_status)
    def status_with_counts(self: NeoSQLiteHandler, *args: Any) -> tuple[int, dict[str, Any]]:
        request_id, status = server_status(self, *args)
        with lock:
            return request_id, {**status, "opcounters": dict(counts)}

    handler.handle_command = counted(handler.handle_command)  # type: ignore[method-assign]
    handler.handle_insert = counted(handler.handle_insert)  # type: ignore[method-assign]
    handler._handle_server_status = status_with_counts  # type: ignore[method-assign]


if __name__ == "__main__":
    logging.getLogger("nx_27017").setLevel(os.environ.get("MONGO_LOG_LEVEL", "WARNING"))
    bound_memory(float(os.environ.get("MONGO_CACHE_MIB", "8")))
    count_operations(NeoSQLiteHandler)
    sys.exit(main())

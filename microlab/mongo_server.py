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
"""

import ctypes
import ctypes.util
import logging
import os
import sqlite3
import sys

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


if __name__ == "__main__":
    logging.getLogger("nx_27017").setLevel(os.environ.get("MONGO_LOG_LEVEL", "WARNING"))
    bound_memory(float(os.environ.get("MONGO_CACHE_MIB", "8")))
    sys.exit(main())

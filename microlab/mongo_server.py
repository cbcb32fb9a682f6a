"""Run the embedded MongoDB (nx-27017) with its logging turned down and its caches bounded.

At INFO it writes two lines for every admin command (every health-check ping), which would
drown the services' logs. MONGO_LOG_LEVEL=INFO brings them back when debugging the server.

Each database is a SQLite file with a page cache of its own that grows with the data, up to
2 MiB a database: a long session's server grew by a third after its first minutes. SQLite's
soft heap limit (process-wide, MONGO_CACHE_MIB, 8 MiB by default) caps the caches together;
past it SQLite reuses its pages instead of asking for more.
"""

import logging
import os
import sqlite3
import sys

from nx_27017.nx_27017 import main

if __name__ == "__main__":
    logging.getLogger("nx_27017").setLevel(os.environ.get("MONGO_LOG_LEVEL", "WARNING"))
    limit = int(float(os.environ.get("MONGO_CACHE_MIB", "8")) * 2**20)
    any_connection = sqlite3.connect(":memory:")  # the limit is the whole process's
    any_connection.execute(f"PRAGMA soft_heap_limit={limit}")
    any_connection.close()
    sys.exit(main())

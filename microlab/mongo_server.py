"""Run the embedded MongoDB (nx-27017) with its logging turned down.

At INFO it writes two lines for every admin command (every health-check ping), which would
drown the services' logs. MONGO_LOG_LEVEL=INFO brings them back when debugging the server.
"""

import logging
import os
import sys

from nx_27017.nx_27017 import main

if __name__ == "__main__":
    logging.getLogger("nx_27017").setLevel(os.environ.get("MONGO_LOG_LEVEL", "WARNING"))
    sys.exit(main())

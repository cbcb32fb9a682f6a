"""Run by tests/unit/test_zygote.py through the zygote: reports what it is, exits 7."""

import json
import os
import sys

print(json.dumps({"ppid": os.getppid(), "pgid": os.getpgid(0), "pid": os.getpid(),
                  "argv": sys.argv[1:], "marker": os.environ.get("ZYGOTE_MARKER"),
                  "cmdline": open("/proc/self/cmdline").read().replace("\0", " ").strip(),
                  "flask_loaded": "flask" in sys.modules}), flush=True)
sys.exit(7)

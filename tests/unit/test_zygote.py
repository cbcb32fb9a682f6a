"""The zygote forks services that the supervisor owns as if it had started them itself."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from microlab.processes import ROOT


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_preload_keeps_the_libraries_and_forgets_our_code():
    # Forgetting our modules is what makes a restarted service run its edited code.
    out = run_python("""
        import json, sys
        from microlab.zygote import OURS, preload
        preload()
        print(json.dumps({"ours": sorted(n for n in sys.modules if n.split(".")[0] in OURS),
                          "libraries": [n for n in ("flask", "pymongo", "pika", "gunicorn")
                                        if n in sys.modules]}))
    """)
    seen = json.loads(out)
    assert seen == {"ours": [], "libraries": ["flask", "pymongo", "pika", "gunicorn"]}


def test_a_forked_child_is_the_supervisors_own(tmp_path):
    # This script plays the supervisor: a child subreaper that spawns through the zygote.
    out = run_python(f"""
        import json, os, sys
        from pathlib import Path
        from microlab.zygote import Zygote
        zygote = Zygote(Path({str(tmp_path)!r}) / "zygote.log")
        zygote.start()
        try:
            child = zygote.spawn([sys.executable, "-m", "tests.unit.zygote_child", "a", "b"],
                                 {{"ZYGOTE_MARKER": "here"}}, Path({str(ROOT)!r}))
            code = child.wait(timeout=30)
            report = json.loads(child.stdout.readline())
            print(json.dumps({{"code": code, "me": os.getpid(), "child": child.pid, **report}}))
        finally:
            zygote.stop()
    """)
    seen = json.loads(out)
    assert seen["code"] == 7                          # its exit status reaches us
    assert seen["ppid"] == seen["me"]                 # our child, not the zygote's
    assert seen["pid"] == seen["child"] == seen["pgid"]  # leads its own process group
    assert seen["argv"] == ["a", "b"] and seen["marker"] == "here"  # its argv and env
    assert "-m tests.unit.zygote_child a b" in seen["cmdline"]       # what ps shows
    assert seen["flask_loaded"]                       # forked with the libraries loaded

"""The zygote forks services that the supervisor owns as if it had started them itself."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from microlab.processes import ROOT
from microlab.zygote import Zygote


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


def test_a_fork_that_fails_is_answered_not_waited_for():
    # Out of processes or memory, either fork can fail: the zygote's own (the middle child) or
    # the middle child's (the service). Either way the answer says so, instead of an empty
    # answer that left the supervisor waiting for a pid for ever.
    out = run_python("""
        import json, os, socket
        from microlab import zygote

        def cannot_fork():
            raise BlockingIOError(11, "Resource temporarily unavailable")

        real_fork = os.fork

        def middle_cannot_fork():
            pid = real_fork()
            if pid == 0:
                os.fork = cannot_fork
            return pid

        answers = {}
        for where, fork in (("zygote", cannot_fork), ("middle", middle_cannot_fork)):
            os.fork = fork
            _, theirs = socket.socketpair()
            _, output = os.pipe()
            request = {"argv": [], "env": {}, "cwd": ".", "supervisor": os.getpid()}
            answers[where] = zygote.fork_service(request, output, theirs).decode()
        print(json.dumps(answers))
    """)
    expected = "error: cannot fork: [Errno 11] Resource temporarily unavailable\n"
    assert json.loads(out) == {"zygote": expected, "middle": expected}


def test_the_supervisor_is_told_why_a_service_could_not_be_forked(tmp_path):
    zygote = Zygote(tmp_path / "zygote.log")
    ours, theirs = socket.socketpair()
    zygote._socket = ours
    zygote._popen = subprocess.Popen(["sleep", "30"])  # stands for a zygote that is alive

    def answer() -> None:  # the zygote's side: read the request, answer why it failed
        socket.recv_fds(theirs, 1 << 16, 1)
        theirs.sendall(b"error: cannot fork: [Errno 12] Cannot allocate memory\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        with pytest.raises(RuntimeError) as raised:
            zygote.spawn([sys.executable, "-m", "services.orders"], {}, ROOT)
        assert str(raised.value) == ("the zygote could not start services.orders: cannot fork: "
                                     "[Errno 12] Cannot allocate memory")
    finally:
        zygote._popen.kill()
        zygote._popen.wait()
        ours.close()
        theirs.close()

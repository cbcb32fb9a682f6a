"""The zygote: one process that imports the services' libraries once and forks every service.

Each service is a Python process that imports the same libraries (Flask, pymongo, pika,
requests, OpenTelemetry, jsonschema, gunicorn...): half a second of CPU and about 30 MB each.
Forked from a process that already holds them, a service starts with those pages shared
copy-on-write with its siblings, and starts without importing them again. The zygote imports
no code of ours for good (it forgets `services`, `patterns` and `microlab` after loading them
once), so a service restarted after an edit runs the edited code.

How a child is made, so that the supervisor owns it like any other child:
- the supervisor is a child subreaper (PR_SET_CHILD_SUBREAPER): an orphan below it is
  re-parented to it, not to init;
- for each request the zygote forks a short-lived child that forks the service and exits:
  the service is re-parented to the supervisor, which waits for it (`ForkedChild.poll`),
  reads its output from a pipe and signals its process group, as with `subprocess.Popen`;
- the service waits to be re-parented before it runs, so gunicorn's worker takes the
  supervisor as its parent, and asks to die with the supervisor as every child does.

`python -m microlab.zygote FD` is the zygote; FD is its end of a socket pair with the
supervisor. Requests are one JSON line (argv `[python, -m, module, *args]`, env, cwd) with the
child's output pipe as an attached file descriptor; the answer is the service's pid, or
`error: why` when it could not be forked.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from setproctitle import setproctitle

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
OURS = ("services", "patterns", "microlab", "exercises")
# What a service or the control room imports, loaded once here (our own modules are then
# forgotten; the libraries they pulled in stay).
PRELOAD = ("patterns.serve", "services.gateway.app", "services.users.app",
           "services.products.app", "services.orders.app", "services.inventory.app",
           "services.payments.app", "services.notifications.app", "services.email.app",
           "services.registry.app", "microlab.dashboard.app")


# -- the supervisor's side ---------------------------------------------------------------

class ForkedChild:
    """A service forked by the zygote, waited for by the supervisor: what ManagedProcess
    uses of `subprocess.Popen` (pid, stdout, poll, wait)."""

    def __init__(self, pid: int, stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it is gone all the same
                self.returncode = -signal.SIGKILL
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode


class Zygote:
    """The supervisor's handle on its zygote (started on first use, again if it died)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen and self._popen.poll() is None else None

    def start(self) -> None:
        """Start the zygote; it imports in the background while other processes start."""
        from microlab.processes import ROOT, _die_with_parent

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
        ours, theirs = socket.socketpair()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "microlab.zygote", str(theirs.fileno())],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=[theirs.fileno()], start_new_session=True,
                preexec_fn=_die_with_parent)
        theirs.close()
        self._socket = ours

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path) -> ForkedChild:
        """Fork `python -m module args...` from the zygote; its output is the child's stdout."""
        with self._lock:
            if self.pid is None:
                self.stop()
                self.start()
            assert self._socket is not None
            read_end, write_end = os.pipe()
            try:
                request = json.dumps({"argv": argv, "env": env, "cwd": str(cwd),
                                      "supervisor": os.getpid()}).encode() + b"\n"
                socket.send_fds(self._socket, [request], [write_end])
            finally:
                os.close(write_end)
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = self._socket.recv(256)
                if not chunk:
                    os.close(read_end)
                    raise RuntimeError(f"the zygote died (see {self.log_path})")
                answer += chunk
        if not answer.strip().isdigit():  # "error: why"
            os.close(read_end)
            why = answer.decode(errors="replace").strip().removeprefix("error: ")
            raise RuntimeError(f"the zygote could not start {' '.join(argv[2:])}: {why}")
        return ForkedChild(int(answer), os.fdopen(read_end, "rb"))

    def stop(self) -> None:
        if self._socket is not None:
            self._socket.close()  # the zygote leaves when its socket closes
            self._socket = None
        if self._popen is not None:
            try:
                self._popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
            self._popen = None


# -- the zygote's side -------------------------------------------------------------------

def preload() -> None:
    """Import what services use, then forget our own modules (they are imported afresh by
    each service, so an edited service runs its new code when restarted)."""
    for module in PRELOAD:
        __import__(module)
    for name in [name for name in sys.modules if name.split(".")[0] in OURS]:
        del sys.modules[name]
    gc.collect()
    gc.freeze()  # never scanned again: the collector's writes would unshare the pages


def serve(channel: socket.socket) -> None:
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(channel, 1 << 20, 1)
        except ConnectionResetError:
            return
        if not message:
            return  # the supervisor is gone
        while not message.endswith(b"\n"):  # a long request may come in more than one piece
            more = channel.recv(1 << 20)
            if not more:
                return
            message += more
        channel.sendall(fork_service(json.loads(message), fds[0], channel))


def fork_service(request: dict[str, Any], output: int, channel: socket.socket) -> bytes:
    """Fork the service `request` asks for, through a middle child; returns the answer line:
    the service's pid, or `error: why` when a fork failed (out of processes or memory), so the
    supervisor is told instead of waiting for a pid that never comes."""
    read_end, write_end = os.pipe()
    try:
        middle = os.fork()
    except OSError as error:
        for fd in (read_end, write_end, output):
            os.close(fd)
        return f"error: cannot fork: {error}\n".encode()
    if middle == 0:
        try:
            service = os.fork()
        except OSError as error:
            os.write(write_end, f"error: cannot fork: {error}\n".encode())
            os._exit(1)
        if service == 0:
            channel.close()
            os.close(read_end)
            os.close(write_end)
            become(request, output)  # does not return
        os.write(write_end, f"{service}\n".encode())
        os._exit(0)
    os.close(output)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        line = answer.readline()
    os.waitpid(middle, 0)  # once it is reaped, the service is the supervisor's child
    return line if line.endswith(b"\n") else b"error: the middle child died before answering\n"


def become(request: dict[str, Any], output: int) -> None:
    """Turn this fresh fork into `python -m module args...` under the supervisor."""
    while os.getppid() != request["supervisor"]:  # re-parented once the middle child exits
        if os.getppid() == 1:
            os._exit(1)  # the supervisor died meanwhile
        time.sleep(0.001)
    # Now the supervisor's main thread (which started the zygote) is our parent: die with it,
    # like every other child of the sandbox (microlab.processes).
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != request["supervisor"]:
        os._exit(1)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(null)
    os.close(output)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    python, flag, module, *args = request["argv"]
    assert flag == "-m", "the zygote runs modules: [python, -m, module, args...]"
    setproctitle(" ".join(request["argv"]))  # what `ps` would show had it been started afresh
    sys.argv = [module, *args]
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as we do
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    sys.exit(0)


def main() -> None:
    channel = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    preload()
    serve(channel)


if __name__ == "__main__":
    main()

"""One child process of the sandbox: started in its own process group, logged, stopped cleanly.

Two rules keep the sandbox from leaving processes behind:
- each child leads its own process group, so stopping it also stops anything it started;
- each child asks the kernel to send it SIGTERM if the supervisor dies (PR_SET_PDEATHSIG), so
  even a supervisor killed with SIGKILL takes its children with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from microlab.zygote import ForkedChild, Zygote

PR_SET_PDEATHSIG = 1
ROOT = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:
    # The death signal fires when the thread that forked us exits, so the supervisor only
    # ever starts children from its main thread.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A named child whose output goes, line by line, to a log file and to `on_line`.

    With a `zygote`, the child (`python -m module ...`) is forked from it instead of started
    afresh (see microlab.zygote); it is owned, logged and stopped the same way.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path,
                 on_line: Callable[[str, str], None] | None = None,
                 health_url: str | None = None, zygote: Zygote | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.on_line = on_line
        self.health_url = health_url
        self.zygote = zygote
        self.popen: subprocess.Popen[bytes] | ForkedChild | None = None
        self.started_at: float | None = None  # wall clock, for uptime
        self._pump: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def start(self) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.zygote:
            self.popen = self.zygote.spawn(self.argv, self.env, ROOT)
        else:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent)
        self.started_at = time.time()
        self._pump = threading.Thread(target=self._copy_output, args=(self.popen,),
                                      name=f"log-{self.name}", daemon=True)
        self._pump.start()

    def _copy_output(self, popen: subprocess.Popen[bytes] | ForkedChild) -> None:
        assert popen.stdout is not None
        with open(self.log_path, "ab") as log:
            for raw in popen.stdout:
                log.write(raw)
                log.flush()
                if self.on_line:
                    self.on_line(self.name, raw.decode("utf-8", "replace").rstrip("\n"))

    def signal_group(self, signum: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole group, wait up to `timeout`, then SIGKILL what is left."""
        if self.popen is None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        # The leader may be gone while a member lingers: always sweep the group.
        self.signal_group(signal.SIGKILL)
        self.popen.wait()
        if self._pump:
            self._pump.join(timeout=2)

    def tree(self) -> list[psutil.Process]:
        """This process and all its descendants (for memory accounting)."""
        if not self.running:
            return []
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def pss_bytes(pid: int) -> int:
    """Proportional set size of a process: its private memory plus its share of shared pages.

    Summing PSS over processes counts shared pages once in total, unlike RSS.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0

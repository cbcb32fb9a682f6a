"""A process that dies in the middle of its work: the fault the data exercises inject.

`Process` stands for the learner's process (a consumer, an outbox relay, a saga orchestrator).
Every call the learner's code makes to the world (store, broker, log, ack) goes through
`before(what)` and `after(what)`; when a `CrashAt` is armed, the process dies at that call,
before it takes effect or just after, by raising `Crash`. The grader then starts a new process
on the same (durable) world, as a supervisor would.

`Crash` is a BaseException, so `except Exception` in the learner's retry loop cannot swallow it
(a power cut is not an error to handle); and once a process has died, every later call from it
raises `Crash` again, so not even a bare `except:` keeps it alive.
"""

from __future__ import annotations

from dataclasses import dataclass

from exercises.grading import Trace


class Crash(BaseException):
    """The process dies here. A new one takes over the same store, broker and log."""


@dataclass(frozen=True)
class CrashAt:
    """Die at the `op`-th call, before it or just after it took effect."""
    op: int
    after: bool

    def __str__(self) -> str:
        return f"{'after' if self.after else 'before'} its call number {self.op}"


class Process:
    """Numbers one process's calls and kills it at the armed one."""

    def __init__(self, trace: Trace, name: str) -> None:
        self.trace = trace
        self.name = name
        self.calls = 0
        self.crash: CrashAt | None = None
        self.dead = False

    def arm(self, crash: CrashAt | None) -> None:
        """Die at `crash` (None: not at all), counting calls from now on."""
        self.crash = crash
        self.calls = 0

    def before(self, what: str) -> None:
        if self.dead:
            self.trace.step(f"{self.name}: {what}")
            self.trace.outcome("CRASH again: a dead process makes no calls")
            raise Crash(what)
        self.calls += 1
        self._maybe_die(after=False)

    def after(self, what: str) -> None:
        self._maybe_die(after=True)

    def _maybe_die(self, *, after: bool) -> None:
        crash = self.crash
        if crash is not None and crash.op == self.calls and crash.after == after:
            self.crash = None
            self.dead = True
            self.trace.outcome(f"CRASH: {self.name} dies {'after' if after else 'before'} it")
            raise Crash(f"{self.name} died")

"""The restart policy: bring a crashed process back, the way compose's `restart: on-failure` does.

A process that exits on its own (nobody stopped it) is started again after a pause that doubles
with every crash in a row:

    crash 1 -> wait 1 s -> start     crash 2 -> wait 2 s     crash 3 -> 4 s   ... at most 30 s
    up for 30 s without crashing -> the next crash counts as the first again
    the 5th crash in a row       -> a crash loop: give up and say so (restarting cannot help
                                    until someone fixes the cause; `microlab start NAME` tries again)

The pause keeps a process that dies at once from burning a core, and gives what it depends on
(a database, a peer) time to come back. In the sandbox, infrastructure (the embedded MongoDB,
the chaos proxy) always has this policy; services get it with `microlab up --restart
on-failure`, since watching a crashed service stay down is a lesson too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 30.0   # up this long, and the crash count starts again
    max_crashes: int = 5           # in a row; at this one the process is left down

    def delay(self, crashes_in_a_row: int) -> float | None:
        """Seconds to wait before restart number `crashes_in_a_row`, or None: give up."""
        if crashes_in_a_row >= self.max_crashes:
            return None
        return min(self.first_delay_s * 2 ** (crashes_in_a_row - 1), self.max_delay_s)


@dataclass
class CrashCounter:
    """Counts each process's crashes in a row under one policy."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    in_a_row: dict[str, int] = field(default_factory=dict)

    def crashed(self, name: str, uptime_s: float) -> tuple[int, float | None]:
        """Record a crash after `uptime_s` of running; returns (crashes in a row, delay or None)."""
        count = 1 if uptime_s >= self.policy.stable_after_s else self.in_a_row.get(name, 0) + 1
        self.in_a_row[name] = count
        return count, self.policy.delay(count)

    def forget(self, name: str) -> None:
        """Someone started or stopped it by hand: the count starts again."""
        self.in_a_row.pop(name, None)

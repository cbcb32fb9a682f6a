"""What the supervisor prints: prefixed, colour-coded log lines and small tables."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence

_COLOURS = [36, 32, 33, 35, 34, 91, 92, 93, 95, 96, 94, 37]
_QUIET_KEYS = {"ts", "level", "service", "logger", "event", "request_id", "trace_id"}


class LogPrinter:
    """Prints `name | line` for every process, one whole line at a time from many threads.

    Services log JSON; here each line is shortened to `level event key=value ...` so a person
    can read a busy terminal. The log files keep the full JSON.
    """

    def __init__(self, names: Sequence[str], colour: bool | None = None, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty() if colour is None else colour
        self.width = max((len(name) for name in names), default=8)
        self.colours = {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(names)}
        self.lock = threading.Lock()

    def __call__(self, name: str, line: str) -> None:
        prefix = f"{name:<{self.width}} |"
        if self.colour:
            prefix = f"\x1b[{self.colours.get(name, 37)}m{prefix}\x1b[0m"
        with self.lock:
            self.stream.write(f"{prefix} {shorten(line)}\n")
            self.stream.flush()


def shorten(line: str) -> str:
    try:
        event = json.loads(line)
    except ValueError:
        return line
    if not isinstance(event, dict) or "event" not in event:
        return line
    extras = " ".join(f"{key}={value}" for key, value in event.items()
                      if key not in _QUIET_KEYS and value is not None)
    return f"{event.get('level', ''):<5} {event['event']} {extras}".rstrip()


def table(rows: list[dict], columns: Sequence[str]) -> str:
    """A plain-text table with a header row, columns as wide as their widest cell."""
    cells = [[str(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in
              enumerate(columns)]
    lines = ["  ".join(column.upper().ljust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)

"""`make learn` — the exercises one after the other, regraded every time you save.

Shows the current exercise, its task and its grade; watches the file you edit (polling its
modification time: no extra dependency) and regrades on every save; moves on when everything
passes; remembers where you stopped in `.microlab/learn.json`. Keys: `h` the next hint,
Enter regrade, `n` skip to the next exercise, `q` quit.

    python -m exercises.grading.learn [--learner-dir DIR] [--state FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import select
import sys
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from exercises.grading.engine import EXERCISES_DIR, Exercise, grade, load_exercises
from exercises.grading.report import bold, dim, green, render, shown_path

POLL_SECONDS = 0.3


@dataclass
class Progress:
    """What `make learn` remembers between runs."""

    path: Path
    current: str = ""
    passed: list[str] = field(default_factory=list)
    hints_shown: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Progress:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path)
        return cls(path, data.get("current", ""), list(data.get("passed", [])),
                   dict(data.get("hints_shown", {})))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {"current": self.current, "passed": self.passed, "hints_shown": self.hints_shown}
        self.path.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def progress_bar(done: int, total: int, width: int = 28) -> str:
    filled = round(width * done / total) if total else width
    return green("█" * filled) + dim("░" * (width - filled)) + f" {done}/{total}"


def task_of(exercise: Exercise) -> str:
    """The README's `## Task` section: what to do, without the rest of the page."""
    text = exercise.readme.read_text(encoding="utf-8") if exercise.readme.exists() else ""
    section = re.search(r"^## Task\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    return section.group(1).strip() if section else f"See {shown_path(exercise.readme)}."


class Session:
    def __init__(self, exercises: list[Exercise], learner_dir: Path, progress: Progress,
                 examples: int, interactive: bool) -> None:
        self.exercises = exercises
        self.learner_dir = learner_dir
        self.progress = progress
        self.examples = examples
        self.interactive = interactive
        self.exercise = self._start_at()
        self.report = ""
        self.message = ""
        self.watched: tuple[int, int] | None = None

    def _start_at(self) -> Exercise | None:
        by_name = {exercise.name: exercise for exercise in self.exercises}
        if self.progress.current in by_name and self.progress.current not in self.progress.passed:
            return by_name[self.progress.current]
        return next((e for e in self.exercises if e.name not in self.progress.passed), None)

    def learner_file(self, exercise: Exercise) -> Path:
        return self.learner_dir / exercise.name / "starter.py"

    def file_state(self) -> tuple[int, int] | None:
        assert self.exercise is not None
        try:
            stat = self.learner_file(self.exercise).stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def regrade(self) -> None:
        """Grade the current file; when it passes, record that and move to the next one."""
        exercise = self.exercise
        assert exercise is not None
        self.watched = self.file_state()
        result = grade(exercise, self.learner_file(exercise), secrets.randbelow(2**32),
                       self.examples)
        self.report = render(result, hint=False)
        if not result.passed:
            return
        if exercise.name not in self.progress.passed:
            self.progress.passed.append(exercise.name)
        self.message = green(f"✓ {exercise.name} passes every property.")
        self.advance()

    def advance(self) -> None:
        assert self.exercise is not None
        names = [e.name for e in self.exercises]
        after = names[names.index(self.exercise.name) + 1:] + names
        upcoming = [n for n in after if n not in self.progress.passed and n != self.exercise.name]
        self.exercise = next((e for e in self.exercises if e.name == upcoming[0]), None) \
            if upcoming else None
        self.progress.current = self.exercise.name if self.exercise else ""
        self.progress.save()
        if self.exercise is not None:
            self.message += f" Next: {self.exercise.name}."
            self.regrade()

    def hint(self) -> None:
        assert self.exercise is not None
        hints = self.exercise.hints()
        shown = min(self.progress.hints_shown.get(self.exercise.name, 0) + 1, len(hints))
        self.progress.hints_shown[self.exercise.name] = shown
        self.progress.save()
        self.message = (bold(f"Hint {shown}/{len(hints)}: ") + hints[shown - 1]) if hints \
            else "This exercise has no hints."

    def screen(self) -> str:
        lines = [bold("Microservices Lab — exercises   ")
                 + progress_bar(len(self.progress.passed), len(self.exercises)), ""]
        for exercise in self.exercises:
            mark = green("✓") if exercise.name in self.progress.passed else (
                bold("→") if exercise is self.exercise else dim("·"))
            lines.append(f"  {mark} {exercise.name:<22} {exercise.title}")
        lines.append("")
        if self.exercise is None:
            lines.append(green(bold("Every exercise passes. Well done!")))
            return "\n".join(lines)
        lines.append(bold(f"Now: {self.exercise.title}") + "  — edit "
                     + bold(shown_path(self.learner_file(self.exercise)))
                     + f", task and hints in {shown_path(self.exercise.readme)}")
        lines.append("")
        lines.append(task_of(self.exercise))
        lines.append("")
        lines.append(self.report)
        if self.message:
            lines += ["", self.message]
        lines += ["", dim("[h] next hint   [Enter] regrade   [n] next exercise   [q] quit"
                          "   — regrades on every save")]
        return "\n".join(lines)

    def show(self) -> None:
        if self.interactive:
            sys.stdout.write("\033[2J\033[H")
        sys.stdout.write(self.screen() + "\n")
        sys.stdout.flush()

    def run(self) -> int:
        if self.exercise is not None:
            self.progress.current = self.exercise.name
            self.progress.save()
            self.regrade()
        self.show()
        while self.exercise is not None:
            key = read_key(POLL_SECONDS)
            if key is None:
                if self.file_state() == self.watched:
                    continue
                self.message = dim("saved: regraded.")
                self.regrade()
            elif key == "q":
                return 0
            elif key == "h":
                self.hint()
            elif key == "n":
                self.message = dim(f"skipped {self.exercise.name} for now.")
                self.advance()
            elif key in ("\r", "\n"):
                self.message = ""
                self.regrade()
            else:
                continue
            self.show()
        return 0


def read_key(timeout: float) -> str | None:
    """One key press, or None after `timeout` seconds; "q" when the input is closed."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        return None
    key = os.read(sys.stdin.fileno(), 1).decode(errors="replace")
    return key.lower() if key else "q"


@contextmanager
def keys_without_enter() -> Iterator[bool]:
    """Single key presses (cbreak mode) when on a terminal; restored on the way out."""
    if not sys.stdin.isatty():
        yield False
        return
    saved = termios.tcgetattr(sys.stdin)
    tty.setcbreak(sys.stdin)
    try:
        yield True
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make learn", description=__doc__.splitlines()[0])
    parser.add_argument("--learner-dir", type=Path, default=EXERCISES_DIR,
                        help="where <name>/starter.py are edited (default: exercises/)")
    parser.add_argument("--state", type=Path,
                        default=EXERCISES_DIR.parent / ".microlab" / "learn.json")
    parser.add_argument("--examples", type=int, default=60)
    args = parser.parse_args(argv)
    session_args = (load_exercises(), args.learner_dir, Progress.load(args.state), args.examples)
    try:
        with keys_without_enter() as interactive:
            return Session(*session_args, interactive=interactive).run()
    except KeyboardInterrupt:
        print()
        return 0


if __name__ == "__main__":
    sys.exit(main())

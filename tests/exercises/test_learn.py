"""`make learn` in a real terminal (a pty): it starts at 0/N, a saved solution moves it on, `h`
shows the next hint, and it remembers where the learner stopped. The learner's files are
copies of the starters in a temporary folder, so the repository's starters stay untouched."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pexpect

from exercises.grading.engine import EXERCISES_DIR, load_exercises

EXERCISES = load_exercises()
TOTAL = len(EXERCISES)


def spawn(learner_dir: Path, state: Path) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "exercises.grading.learn", "--learner-dir", str(learner_dir),
         "--state", str(state), "--examples", "20"],
        cwd=str(EXERCISES_DIR.parent), env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
        encoding="utf-8", timeout=120, dimensions=(60, 200),
    )


def test_learn_advances_on_a_save_and_remembers(tmp_path: Path) -> None:
    learner_dir = tmp_path / "work"
    for exercise in EXERCISES:
        (learner_dir / exercise.name).mkdir(parents=True)
        shutil.copy(exercise.starter, learner_dir / exercise.name / "starter.py")
    state = tmp_path / "learn.json"
    first, second = EXERCISES[0], EXERCISES[1]

    session = spawn(learner_dir, state)
    session.expect(f"0/{TOTAL}")
    session.expect(f"Now: {first.title}")
    session.expect("not implemented yet")
    session.expect(r"\[q\] quit")

    session.send("h")
    session.expect("Hint 1/")

    shutil.copy(first.directory / "reference.py", learner_dir / first.name / "starter.py")
    session.expect(f"1/{TOTAL}", timeout=180)
    session.expect(f"Now: {second.title}")
    session.expect(f"{first.name} passes every property")
    session.expect(r"\[q\] quit")
    session.send("q")
    session.expect(pexpect.EOF)
    session.close()
    assert session.exitstatus == 0

    saved = json.loads(state.read_text())
    assert saved["passed"] == [first.name]
    assert saved["current"] == second.name
    assert saved["hints_shown"] == {first.name: 1}

    again = spawn(learner_dir, state)
    again.expect(f"1/{TOTAL}")
    again.expect(f"Now: {second.title}")
    again.expect(r"\[q\] quit")
    again.send("q")
    again.expect(pexpect.EOF)

"""The lesson cannot rot: its links, excerpts, symbols, commands and diagram match the code.

`microlab.doccheck` checks every page of README.md, docs/ and lessons/; `microlab.diagram`
keeps the topology picture in step with topology.toml. Each kind of mistake is also planted in
a throw-away page here, to see the checker name it: a check is trusted once it has failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from microlab import diagram
from microlab.compose import drift
from microlab.doccheck import SECTIONS, check_pages, check_text, pages
from microlab.processes import ROOT
from microlab.topology import TOPOLOGY_FILE, load_topology

# Planted pages are checked as if they were a chapter in lessons/, without being written there.
CHAPTER = ROOT / "lessons" / "99-planted.md"
ALL_SECTIONS = "\n".join(f"## {section}\n\nText.\n" for section in SECTIONS)


def planted(body: str) -> list[str]:
    return [problem.message for problem in check_text(f"# Planted\n\n{body}\n{ALL_SECTIONS}",
                                                      CHAPTER)]


def test_every_page_of_the_lesson_matches_the_code() -> None:
    problems = check_pages(pages())
    assert not problems, "\n".join(map(str, problems))


def test_the_topology_diagram_in_every_page_is_fresh() -> None:
    differences = drift(diagram.render(load_topology()))
    assert not differences, "run `python -m microlab.diagram --write`:\n" + "\n".join(differences)


def test_a_topology_change_makes_the_diagram_stale(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"Intro.\n\n{diagram.marked_block(load_topology())}\n\nOutro.\n")
    changed = tmp_path / "topology.toml"
    changed.write_text(TOPOLOGY_FILE.read_text().replace("port = 3005", "port = 3055"))
    [difference] = drift(diagram.render(load_topology(changed), pages=(page,)))
    assert '-    payments["payments :3005"]' in difference
    assert '+    payments["payments :3055"]' in difference
    refreshed = diagram.render(load_topology(changed), pages=(page,))[page]
    assert refreshed.startswith("Intro.\n\n") and refreshed.endswith("\n\nOutro.\n")


def test_a_page_without_markers_is_named() -> None:
    with pytest.raises(ValueError, match="no <!-- topology:begin -->"):
        diagram.refresh("no markers here", "block", "page.md")


def test_a_correct_page_has_no_problems() -> None:
    body = """
A [link](../patterns/breaker.py), one [with an anchor](01-fundamentals.md#the-idea), a
[folder](../chaos/), [an anchor here](#the-idea), `patterns/breaker.py::CircuitBreaker.call`,
`microlab/topology.py::TOPOLOGY_FILE`, the path `services/gateway/domain.py`, a generated one
`reports/chaos/`.

<!-- excerpt: patterns/retry.py -->
```python
def full_jitter(
    retry_number: int, base_delay: float, max_delay: float, rng: random.Random
) -> float:
```

<!-- excerpt: patterns/breaker.py -->
```python
def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
```

```sh
make chaos EXP=payments-outage     # a comment
make load SCENARIO=retries ARGS=--short
make notebooks NB="03 07"
.venv/bin/python -m microlab chaos down 'orders->payments'
python -m microlab chaos latency orders:inventory 800 --jitter 100
.venv/bin/python -m microlab --compose check
.venv/bin/python -m microlab stop email && curl -s http://127.0.0.1:3000/health
.venv/bin/python -m chaos.runner inventory-latency
python -m microlab.diagram --check
curl -s -X POST $G/api/orders -H 'Content-Type: application/json' \\
     -d '{"items": []}'
```
"""
    assert planted(body) == []


@pytest.mark.parametrize("body, expected", [
    ("A [dead link](../patterns/no_such_module.py).", "dead link '../patterns/no_such_module.py'"),
    ("A [bad anchor](01-fundamentals.md#no-such-heading).", "no heading with the anchor"),
    ("Out [of the repo](../../shared/DESIGN.md).", "leaves the repository"),
    ("A [folder](../patterns/) with no README.", "a folder without a README.md"),
    ("[ref]: ../missing/file.md", "dead link '../missing/file.md'"),
    ("A path `patterns/no_such_file.py` in code.", "path `patterns/no_such_file.py` does not exist"),
    ("`patterns/breaker.py::NoSuchBreaker`", "NoSuchBreaker is not defined there"),
    ("`patterns/breaker.py::CircuitBreaker.no_such_method`", "no_such_method is not defined"),
    ("`patterns/nothing.py::Thing`", "patterns/nothing.py does not exist"),
    ("<!-- excerpt: patterns/retry.py -->\n```python\ndef full_jitter(\n"
     "    retry_number: int, base_delay: float, max_delay: float, rng: random.Random\n"
     ") -> int:\n```", "no longer matches the code"),
    ("<!-- excerpt: patterns/retry.py -->\n```python\ndef full_jitter(\n...\n```", "elides lines"),
    ("<!-- excerpt: patterns/retry.py -->\n\n```python\ndef full_jitter(\n```",
     "must be followed at once by a fenced block"),
    ("<!-- excerpt: patterns/gone.py -->\n```python\nx = 1\n```", "the file does not exist"),
    ("```sh\nmake no-such-target\n```", "the Makefile has no target 'no-such-target'"),
    ("```sh\nmake chaos EXP=no-such-experiment\n```", "no chaos experiment 'no-such-experiment'"),
    ("```sh\nmake load SCENARIO=stampede\n```", "no load scenario 'stampede'"),
    ("```sh\nmake notebooks NB=42\n```", "no notebook numbered '42'"),
    ("```sh\n.venv/bin/python -m microlab chaos down orders:email\n```", "unknown edge 'orders:email'"),
    ("```sh\npython -m microlab chaos down 'payments->orders'\n```", "unknown edge 'payments->orders'"),
    ("```sh\n.venv/bin/python -m microlab explode\n```", "does not parse: "),
    ("```sh\n.venv/bin/python -m microlab chaos latency orders:users slow\n```", "does not parse"),
    ("```sh\n.venv/bin/python -m microlab stop billing\n```", "unknown service 'billing'"),
    ("```sh\npython -m chaos.runner no-such-experiment\n```", "no chaos experiment"),
    ("```sh\npython -m microlab.no_such_module\n```", "no such module"),
    ("```sh\necho 'unterminated\n```", "does not parse as shell"),
])
def test_a_planted_mistake_is_named(body: str, expected: str) -> None:
    problems = planted(body)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_chapter_needs_its_sections_in_order() -> None:
    missing = check_text("# A chapter\n\n## What you will learn\n\n## The idea\n", CHAPTER)
    assert "lacks the sections: In our code, See it" in missing[0].message
    swapped = ALL_SECTIONS.replace("## The idea", "## TEMP").replace(
        "## In our code", "## The idea").replace("## TEMP", "## In our code")
    [problem] = check_text(swapped, CHAPTER)
    assert "out of order" in problem.message
    # A page that is not a chapter (the index, a doc) needs no sections.
    assert check_text("# Index\n", ROOT / "lessons" / "README.md") == []


def test_the_command_line_reports_problems_with_their_place(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\nSee [here](nowhere.md).\n")
    run = subprocess.run([sys.executable, "-m", "microlab.doccheck", str(page)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert f"{page}:3: dead link 'nowhere.md'" in run.stdout
    missing = subprocess.run([sys.executable, "-m", "microlab.doccheck", "no/such/page.md"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such page: no/such/page.md" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_diagram_command_checks_the_pages() -> None:
    run = subprocess.run([sys.executable, "-m", "microlab.diagram", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    """What `make docs` runs (without the Mermaid bundle): a broken link or anchor fails it."""
    # Not --quiet: strict mode counts the warnings it logs, and --quiet silences them.
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                          "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    warnings = [line for line in run.stderr.splitlines() if not line.startswith(("INFO", " "))]
    assert run.returncode == 0, "\n".join(warnings)
    assert (tmp_path / "site" / "lessons" / "01-fundamentals.html").is_file()
    # A source file a chapter links to is on the site at the same path.
    assert (tmp_path / "site" / "patterns" / "retry.py").is_file()

"""The lesson's prose checked against the code, so a chapter cannot quietly rot.

    python -m microlab.doccheck                               # README.md, docs/, lessons/
    python -m microlab.doccheck lessons/07-circuit-breaker.md # some pages only

A page of the lesson points at the code in five ways, and each is checked here (the rules for
writers are in `lessons/CONVENTIONS.md`):

- links: every relative link reaches a file or folder inside the repository, and a `#anchor`
  names a heading of the target page (the slug MkDocs gives it);
- symbols: inline code such as `patterns/breaker.py::CircuitBreaker.call` names a class,
  function, method or assigned name that the file really defines (read with `ast`, nothing is
  imported); inline code that is a repository path must exist;
- excerpts: a fenced block right after `<!-- excerpt: path -->` still appears, line for line,
  in that file;
- commands: each line of a ```sh block that runs `make`, the `microlab` CLI or a project module
  parses: the make target exists, the CLI's own parser accepts the arguments, and experiment,
  scenario, notebook, edge and service names exist;
- sections: a chapter (`lessons/NN-*.md`) has the nine sections, in order.

Each problem is reported as `path:line: what is wrong`; the exit status is 1 if there is one.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import re
import shlex
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from markdown.extensions.toc import slugify

from microlab.processes import ROOT
from microlab.supervisor import INFRASTRUCTURE
from microlab.topology import load_topology

SECTIONS = ("What you will learn", "The idea", "In our code", "See it", "Break it", "Load it",
            "What can go wrong", "Exercises", "Further reading")
CHAPTER = re.compile(r"lessons/\d\d-[\w-]+\.md$")
MAX_EXCERPT_LINES = 25
# Written by runs, never committed: a path into them in the prose is not checked.
GENERATED = {"reports", "build", "site"}

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
EXCERPT = re.compile(r"^<!--\s*excerpt:\s*(\S+)\s*-->\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
SYMBOL = re.compile(r"^([\w./-]+\.py)::([A-Za-z_][\w.]*)$")
REPO_PATH = re.compile(r"^[\w.-]+(/[\w.-]+)*/?$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
MAKE_TARGET = re.compile(r"^([A-Za-z][\w.-]*(?:\s+[A-Za-z][\w.-]*)*)\s*:(?!=)")
SHELL_SEPARATORS = {"|", "||", "&&", ";", "&"}


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        try:
            where = self.path.relative_to(ROOT)
        except ValueError:
            where = self.path
        return f"{where}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Block:
    """A fenced code block: the line of its opening fence, its language and its lines."""

    line: int
    language: str
    lines: list[str]


@dataclass(frozen=True)
class Page:
    """A Markdown page split into prose lines (numbered from 1) and fenced blocks."""

    prose: list[tuple[int, str]]
    blocks: list[Block]


def split_page(text: str) -> Page:
    prose: list[tuple[int, str]] = []
    blocks: list[Block] = []
    fence = None
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None:
            opening = FENCE.match(line)
            if opening:
                fence = (opening.group(2), Block(number, opening.group(3).lower(), []))
            else:
                prose.append((number, line))
        elif line.strip().startswith(fence[0]) and not line.strip().strip(fence[0][0]):
            blocks.append(fence[1])
            fence = None
        else:
            fence[1].lines.append(line)
    if fence is not None:
        blocks.append(fence[1])
    return Page(prose, blocks)


def without_code(line: str) -> str:
    return INLINE_CODE.sub("", line)


def links(page: Page) -> list[tuple[int, str]]:
    """Every link target in the prose (inline, image and reference links), with its line."""
    found = []
    for number, line in page.prose:
        found += [(number, target) for target in LINK.findall(without_code(line))]
        reference = REFERENCE_LINK.match(line)
        if reference:
            found.append((number, reference.group(1)))
    return found


def is_relative(target: str) -> bool:
    return not (SCHEME.match(target) or target.startswith("//") or target.startswith("#"))


def heading_slugs(text: str) -> set[str]:
    """The anchors MkDocs gives a page's headings (its `toc` slugs, duplicates numbered)."""
    slugs: set[str] = set()
    for _, line in split_page(text).prose:
        heading = HEADING.match(line)
        if not heading:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(2)).replace("`", "")
        slug = base = slugify(title, "-")
        count = 0
        while slug in slugs:
            count += 1
            slug = f"{base}_{count}"
        slugs.add(slug)
    return slugs


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_link(target: str, page: Path, text: str, root: Path) -> str | None:
    """Why the link `target` on `page` is broken, or None when it is fine."""
    if SCHEME.match(target) or target.startswith("//"):
        return None
    path_part, _, anchor = target.partition("#")
    if not path_part:
        destination, destination_text = page, text
    else:
        destination = (page.parent / path_part).resolve()
        if _inside(page, root) and not _inside(destination, root):
            return f"link {target!r} leaves the repository"
        if not destination.exists():
            shown = destination.relative_to(root) if _inside(destination, root) else destination
            return f"dead link {target!r}: {shown} does not exist"
        if destination.is_dir() and not (destination / "README.md").is_file():
            # The site shows a folder by its README; without one the link leads nowhere.
            return f"link {target!r} is a folder without a README.md: link a file in it"
        destination_text = destination.read_text() if destination.suffix == ".md" else None
    if anchor and destination_text is not None and anchor not in heading_slugs(destination_text):
        return f"link {target!r}: no heading with the anchor #{anchor}"
    return None


@cache
def _module_tree(path: Path, mtime: float) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _names(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    found: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            found.update((target.id, node) for target in node.targets
                         if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
    return found


def check_symbol(reference: str, root: Path) -> str | None:
    """Why `file.py::Name` or `file.py::Class.member` does not resolve, or None."""
    match = SYMBOL.match(reference)
    assert match, reference
    path = root / match.group(1)
    if not path.is_file():
        return f"symbol {reference!r}: {match.group(1)} does not exist"
    try:
        tree = _module_tree(path, path.stat().st_mtime)
    except SyntaxError as error:
        return f"symbol {reference!r}: {match.group(1)} does not parse ({error.msg})"
    body: list[ast.stmt] = tree.body
    for part in match.group(2).split("."):
        node = _names(body).get(part)
        if node is None:
            return f"symbol {reference!r}: {part} is not defined there"
        body = node.body if isinstance(node, ast.ClassDef) else []
    return None


def check_inline_path(code: str, root: Path) -> str | None:
    """A repository path in inline code must exist; anything else in backticks is free."""
    if not REPO_PATH.match(code) or "/" not in code.rstrip("/"):
        return None
    first = code.split("/")[0]
    if first.startswith(".") or first in GENERATED or not (root / first).exists():
        return None
    if not (root / code).exists():
        return f"path `{code}` does not exist"
    return None


def excerpt_found(block: list[str], source: list[str]) -> bool:
    """True when `block` is a contiguous run of `source`'s lines, allowing one common indent."""
    block = [line.rstrip() for line in block]
    source = [line.rstrip() for line in source]
    first = block[0]
    for start in range(len(source) - len(block) + 1):
        candidate = source[start]
        if not candidate.endswith(first) or candidate[: len(candidate) - len(first)].strip():
            continue
        indent = candidate[: len(candidate) - len(first)]
        if all(source[start + offset] == (indent + line if line else "")
               for offset, line in enumerate(block)):
            return True
    return False


def check_excerpt(relative: str, block: Block, root: Path) -> str | None:
    source = root / relative
    if not source.is_file():
        return f"excerpt of {relative}: the file does not exist"
    if not any(line.strip() for line in block.lines):
        return f"excerpt of {relative} is empty"
    if any(line.strip() in ("...", "…") for line in block.lines):
        return f"excerpt of {relative} elides lines with '...': show a contiguous slice"
    if len(block.lines) > MAX_EXCERPT_LINES:
        return f"excerpt of {relative} has {len(block.lines)} lines (at most {MAX_EXCERPT_LINES})"
    if not excerpt_found(block.lines, source.read_text().splitlines()):
        return f"excerpt of {relative} no longer matches the code (stale: copy it again)"
    return None


@cache
def make_targets(makefile: Path) -> frozenset[str]:
    targets: set[str] = set()
    for line in makefile.read_text().splitlines():
        match = MAKE_TARGET.match(line)
        if match:
            targets.update(match.group(1).split())
    return frozenset(targets)


def _literal(path: Path, name: str) -> object:
    """The value of a module-level constant, read without importing the module."""
    node = _names(_module_tree(path, path.stat().st_mtime).body).get(name)
    if not isinstance(node, ast.Assign):
        raise LookupError(f"{path} defines no {name}")
    return ast.literal_eval(node.value)


def _check_experiment(name: str, root: Path) -> str | None:
    if (root / "chaos" / f"{name}.json").is_file():
        return None
    known = ", ".join(sorted(path.stem for path in (root / "chaos").glob("*.json")))
    return f"no chaos experiment {name!r} (known: {known})"


def _check_scenario(name: str, root: Path) -> str | None:
    scenarios = _literal(root / "loadtests" / "run.py", "SCENARIOS")
    if name in scenarios:  # type: ignore[operator]
        return None
    return f"no load scenario {name!r} (known: {', '.join(scenarios)})"  # type: ignore[arg-type]


def _check_notebooks(numbers: str, root: Path) -> str | None:
    for number in numbers.split():
        if not list((root / "notebooks").glob(f"{number}-*.py")):
            return f"no notebook numbered {number!r}"
    return None


MAKE_VARIABLES = {"EXP": _check_experiment, "SCENARIO": _check_scenario,
                  "NB": _check_notebooks}


def check_make(words: list[str], root: Path) -> str | None:
    for word in words:
        name, equals, value = word.partition("=")
        if equals:
            checker = MAKE_VARIABLES.get(name)
            problem = checker(value, root) if checker else None
        elif word.startswith("-"):
            problem = None
        else:
            problem = (None if word in make_targets(root / "Makefile")
                       else f"`make {word}`: the Makefile has no target {word!r}")
        if problem:
            return problem
    return None


def check_microlab_cli(arguments: list[str]) -> str | None:
    from microlab.cli import build_parser  # the real parser, so the prose follows the CLI

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parsed = build_parser().parse_args(arguments)
    except SystemExit as exit_:
        if exit_.code in (0, None):  # --help
            return None
        message = errors.getvalue().strip().splitlines()
        return f"`microlab {' '.join(arguments)}` does not parse: {message[-1] if message else ''}"
    topology = load_topology()
    try:
        if getattr(parsed, "edge", None):
            topology.edge(parsed.edge)
        if getattr(parsed, "service", None) and parsed.service not in INFRASTRUCTURE:
            topology.service(parsed.service)
    except KeyError as error:
        return f"`microlab {' '.join(arguments)}`: {error.args[0]}"
    return None


def check_python_module(module: str, arguments: list[str], root: Path) -> str | None:
    if module == "microlab":
        return check_microlab_cli(arguments)
    path = root / Path(*module.split("."))
    ours = (root / module.split(".")[0]).is_dir()
    if not (path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()):
        if ours or importlib.util.find_spec(module.split(".")[0]) is None:
            return f"`python -m {module}`: no such module"
        return None  # an installed tool: pytest, mkdocs, jupyter...
    positional = [word for word in arguments if not word.startswith("-")]
    if module == "chaos.runner" and positional:
        return _check_experiment(positional[0], root)
    if module == "loadtests.run" and positional:
        return _check_scenario(positional[0], root)
    return None


def _simple_commands(line: str) -> list[list[str]]:
    words = shlex.split(line, comments=True)
    commands: list[list[str]] = [[]]
    for word in words:
        if word in SHELL_SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [command for command in commands if command]


def check_command(line: str, root: Path) -> str | None:
    """Why a shell line a reader is told to run would not work, or None."""
    try:
        commands = _simple_commands(line)
    except ValueError as error:
        return f"command does not parse as shell ({error}): {line.strip()}"
    for words in commands:
        while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
            words = words[1:]  # VAR=value before the command
        if not words:
            continue
        program = Path(words[0]).name
        if program == "make":
            problem = check_make(words[1:], root)
        elif program == "microlab":
            problem = check_microlab_cli(words[1:])
        elif re.match(r"^python(3(\.\d+)?)?$", program) and words[1:2] == ["-m"] \
                and len(words) > 2:
            problem = check_python_module(words[2], words[3:], root)
        else:
            problem = None
        if problem:
            return problem
    return None


def shell_lines(block: Block) -> list[tuple[int, str]]:
    """The block's logical lines (backslash continuations joined) with their line numbers."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, line in enumerate(block.lines, start=block.line + 1):
        start, text = pending if pending else (offset, "")
        text += line
        if line.rstrip().endswith("\\") and not line.lstrip().startswith("#"):
            pending = (start, text.rstrip()[:-1] + " ")
        else:
            lines.append((start, text))
            pending = None
    if pending:
        lines.append(pending)
    return lines


def check_text(text: str, page: Path, root: Path = ROOT) -> list[Problem]:
    """Every problem of a page whose text is `text`, as if it lived at `page`."""
    page = page.resolve()
    parsed = split_page(text)
    problems: list[Problem] = []

    def report(line: int, message: str | None) -> None:
        if message:
            problems.append(Problem(page, line, message))

    for number, target in links(parsed):
        report(number, check_link(target, page, text, root))
    for number, line in parsed.prose:
        for _, code in INLINE_CODE.findall(line):
            code = code.strip()
            report(number, check_symbol(code, root) if SYMBOL.match(code)
                   else check_inline_path(code, root))
        excerpt = EXCERPT.match(line)
        if excerpt:
            block = next((block for block in parsed.blocks if block.line == number + 1), None)
            if block is None:
                report(number, "an excerpt comment must be followed at once by a fenced block")
            else:
                report(number, check_excerpt(excerpt.group(1), block, root))
    for block in parsed.blocks:
        if block.language == "sh":
            for number, line in shell_lines(block):
                report(number, check_command(line, root))
    relative = page.relative_to(root).as_posix() if _inside(page, root) else page.name
    if CHAPTER.search(relative):
        headings = [line[3:].strip() for _, line in parsed.prose if line.startswith("## ")]
        missing = [section for section in SECTIONS if section not in headings]
        if missing:
            report(1, f"chapter lacks the sections: {', '.join(missing)}")
        else:
            order = [headings.index(section) for section in SECTIONS]
            if order != sorted(order):
                report(1, f"chapter sections out of order; want: {', '.join(SECTIONS)}")
    return problems


def pages(root: Path = ROOT) -> list[Path]:
    """The pages the lesson is made of: the README, docs/ and lessons/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md")),
            *sorted((root / "lessons").glob("*.md"))]


def check_pages(paths: list[Path], root: Path = ROOT) -> list[Problem]:
    problems: list[Problem] = []
    for path in paths:
        problems += check_text(path.read_text(), path, root)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microlab.doccheck",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", type=Path,
                        help="Markdown pages to check (default: README.md, docs/, lessons/)")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.pages if not path.is_file()]
    if missing:
        print(f"no such page: {', '.join(missing)}", file=sys.stderr)
        return 2
    checked = args.pages or pages()
    problems = check_pages(checked)
    for problem in problems:
        print(problem)
    print(f"{len(checked)} pages, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

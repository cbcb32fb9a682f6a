"""MkDocs hooks that turn the repository's own pages into the lesson's website (`make docs`).

The pages stay where a reader of the repository finds them: `README.md`, `lessons/`, `docs/`.
MkDocs wants one folder of pages, so instead of copying them into one, these hooks hand MkDocs
the repository itself, file by file, at the same relative paths:

- the pages: the README (the home page), every page of `docs/` and `lessons/`;
- everything those pages link to, followed link by link: a `.md` file becomes a page too (an
  exercise's README, `chaos/README.md`), any other file (`../patterns/breaker.py`) is copied as
  it is, and a link to a folder brings in the folder's README.

So `../patterns/breaker.py` in a chapter is a working link on the site as on GitHub, and strict
mode still fails on a link to a file that does not exist.

The API reference: each service's OpenAPI document and a page drawing it (`microlab.apidocs`,
run by `make docs` into `build/api/`), under `api/` on the site.

Diagrams: a ```mermaid block is drawn in the browser by Mermaid, which `make docs` fetches from
npm into `build/vendor/` and names in `MERMAID_JS`; without it the block shows as code. Nothing
is loaded from the network when the site is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from microlab.doccheck import is_relative, links, pages, split_page
from microlab.processes import ROOT

# The API reference, written by `python -m microlab.apidocs build/api` (`make docs` runs it).
API_DIR = ROOT / "build" / "api"

# Runs after the page is parsed: each ```mermaid block (a <pre><code> to Markdown) becomes the
# <div class="mermaid"> that Mermaid draws.
MERMAID_INIT = """\
document.querySelectorAll("pre > code.language-mermaid").forEach(function (code) {
  var diagram = document.createElement("div");
  diagram.className = "mermaid";
  diagram.textContent = code.textContent;
  code.parentNode.replaceWith(diagram);
});
mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
mermaid.run();
"""


def mermaid_js() -> Path | None:
    """The vendored Mermaid bundle `make docs` names in MERMAID_JS, if any."""
    named = os.environ.get("MERMAID_JS")
    if not named:
        return None
    path = (ROOT / named).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"MERMAID_JS={named}: no such file (`make docs` fetches it)")
    return path


def site_files(root: Path = ROOT) -> list[Path]:
    """The lesson's pages and everything they link to, transitively, inside `root`."""
    found: list[Path] = []
    queue = list(pages(root))
    while queue:
        path = queue.pop(0)
        if path.is_dir():
            path = path / "README.md"
            if not path.is_file():
                continue
        if path in found:
            continue
        found.append(path)
        if path.suffix != ".md":
            continue
        for _, target in links(split_page(path.read_text())):
            if not is_relative(target):
                continue
            linked = (path.parent / target.partition("#")[0]).resolve()
            if linked.exists() and root in linked.parents:
                queue.append(linked)
    return found


def on_config(config: MkDocsConfig, **_: Any) -> MkDocsConfig:
    lessons = sorted((ROOT / "lessons").glob("[0-9][0-9]-*.md"))
    references = sorted((ROOT / "docs").glob("*.md"),
                        key=lambda path: (path.name != "architecture.md", path.name))
    config["nav"] = [
        {"Home": "README.md"},
        {"The lesson": ["lessons/README.md",
                        *(path.relative_to(ROOT).as_posix() for path in lessons),
                        "lessons/CONVENTIONS.md"]},
        {"How it is built": [path.relative_to(ROOT).as_posix() for path in references]},
    ]
    if (API_DIR / "index.md").is_file():
        config["nav"].append({"API reference": "api/index.md"})
    if mermaid_js():
        config["extra_javascript"] += ["js/mermaid.min.js", "js/mermaid-init.js"]
    return config


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    # Keep the theme's own files; the pages come from the repository, not from docs_dir.
    kept = [file for file in files if file.src_dir != config["docs_dir"]]
    ours = [File(path.relative_to(ROOT).as_posix(), str(ROOT), config["site_dir"],
                 config["use_directory_urls"]) for path in site_files()]
    ours += [File(path.relative_to(API_DIR.parent).as_posix(), str(API_DIR.parent),
                  config["site_dir"], config["use_directory_urls"])
             for path in sorted(API_DIR.rglob("*")) if path.is_file()]
    bundle = mermaid_js()
    if bundle:
        ours += [File.generated(config, "js/mermaid.min.js", abs_src_path=str(bundle)),
                 File.generated(config, "js/mermaid-init.js", content=MERMAID_INIT)]
    return Files(kept + ours)

"""The notebooks as stored: jupytext percent files, numbered in reading order, each connecting
to the sandbox first and tidying up last, asserting what it shows, with no outputs kept."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

from microlab.notebooks import NOTEBOOKS, notebook_files

FILES = notebook_files()


def code_cells(path: Path) -> list[str]:
    return [cell.source for cell in jupytext.read(path).cells if cell.cell_type == "code"]


def test_eleven_notebooks_numbered_00_to_10() -> None:
    assert [path.name[:2] for path in FILES] == [f"{number:02d}" for number in range(11)]


def test_no_executed_notebook_is_kept_beside_them() -> None:
    assert not list(NOTEBOOKS.glob("*.ipynb")), "notebooks are stored as jupytext .py files"


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_a_notebook_connects_first_asserts_and_tidies_last(path: Path) -> None:
    notebook = jupytext.read(path)
    assert notebook.metadata["jupytext"]["formats"] == "py:percent"
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.cells[0].cell_type == "markdown"
    assert re.match(rf"# {path.name[:2]} · \S", notebook.cells[0].source)
    code = code_cells(path)
    assert "Lab.connect()" in code[0]
    assert code[-1].strip().endswith("lab.tidy()")
    assert sum(len(re.findall(r"^\s*assert ", cell, re.M)) for cell in code) >= 3


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_a_cell_allowed_to_raise_says_why(path: Path) -> None:
    for cell in jupytext.read(path).cells:
        if "raises-exception" in cell.metadata.get("tags", []):
            assert "#" in cell.source, f"{path.name}: a raises-exception cell without a why"


def test_selecting_notebooks_by_number_or_name() -> None:
    assert [path.stem for path in notebook_files(["00"])] == ["00-tour"]
    assert notebook_files(["00-tour"]) == notebook_files(["00"])
    with pytest.raises(SystemExit, match="no notebook called 42"):
        notebook_files(["42"])

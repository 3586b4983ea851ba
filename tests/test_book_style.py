"""Every line of the chapters' code cells, and of what they print, fits in 88 columns (issue 17).

Readers see the cells as written, on the book's pages and in Colab, where a longer line scrolls
sideways. ruff does not read book/ (pyproject.toml excludes it), so this test holds the limit: it
reads the notebooks' JSON only and runs nothing. IPython lines (`!git clone ...`, `%matplotlib`)
count too; a long shell command splits with a trailing backslash, which IPython joins.
The page's content column holds 88 characters of code at a 1280 px window (book/_theme); printed text
outputs are held to the same width, so that a table keeps its columns instead of wrapping.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
MAX_LINE = 88


def test_the_book_has_notebooks():
    assert NOTEBOOKS, f"no notebooks in {ROOT / 'book'}: the line-length test below would check nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_code_cell_lines_fit_in_88_columns(path: Path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    too_long = []
    for index, cell in enumerate(cells):  # index counts every cell, markdown too, from 0
        if cell["cell_type"] != "code":
            continue
        source = cell["source"]
        source = "".join(source) if isinstance(source, list) else source
        for number, line in enumerate(source.splitlines(), start=1):
            if len(line) > MAX_LINE:
                too_long.append(f"{path.name} cell {index} line {number} ({len(line)} chars): {line}")
    assert not too_long, (f"{len(too_long)} code-cell line(s) over {MAX_LINE} characters "
                          "(cell = index in the notebook's cells, from 0):\n" + "\n".join(too_long))


def _shown_text(output: dict) -> str:
    """The text an output shows on the page: a stream, or text/plain when nothing richer is shown
    (a figure's or a widget's text/plain is only a fallback)."""
    if output["output_type"] == "stream":
        text = output["text"]
    else:
        data = output.get("data", {})
        if any(mime.startswith("image/") or "widget" in mime or mime == "text/html" for mime in data):
            return ""
        text = data.get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_printed_lines_fit_in_88_columns(path: Path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    too_long = [f"{path.name} cell {index} ({len(line)} chars): {line}"
                for index, cell in enumerate(cells) if cell["cell_type"] == "code"
                for output in cell.get("outputs", []) for line in _shown_text(output).splitlines()
                if len(line) > MAX_LINE]
    assert not too_long, f"{len(too_long)} printed line(s) over {MAX_LINE} characters:\n" + "\n".join(too_long)


def _set_repository():
    spec = importlib.util.spec_from_file_location("set_repository", ROOT / "scripts" / "set_repository.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_chapter_clones_the_repository_named_in_config_yml():
    """The repository URL has one home, _config.yml (launch buttons read it); scripts/set_repository.py
    copies it into each chapter's Colab cell, the intro and the README, and this test finds a stale copy."""
    module = _set_repository()
    url = module.configured_url()
    assert url.startswith("https://")
    for place, urls in module.copies().items():
        assert urls == [url], f"{place}: REPO lines {urls}, _config.yml says {url}"
    for path in module.TEXT_FILES:
        assert url in path.read_text(), f"{path.name} does not name {url}"


def _exercises(markdown: str) -> tuple[list[int], set[int]]:
    """The numbers of the exercises listed under "## Exercises", and of those with a hint or solution box."""
    section = markdown.split("## Exercises", 1)[1]
    listed = [int(m) for m in re.findall(r"^(\d+)\. ", section, flags=re.M)]
    helped = {int(m) for m in re.findall(r"admonition\}\s+(?:Hint for|Solution to) exercise (\d+)", section)}
    return listed, helped


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_exercise_has_a_hint_or_a_solution(path: Path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "## Exercises" in markdown, f"{path.name} has no Exercises section"
    listed, helped = _exercises(markdown)
    assert listed == list(range(1, len(listed) + 1)) and listed, f"{path.name}: exercises numbered {listed}"
    missing = sorted(set(listed) - helped)
    assert not missing, f"{path.name}: exercise(s) {missing} have no hint or solution box"


def test_the_exercise_check_sees_a_missing_hint():
    text = "## Exercises\n\n1. One.\n2. Two.\n\n:::{admonition} Hint for exercise 1\n:class: dropdown\nx\n:::\n"
    assert _exercises(text) == ([1, 2], {1})

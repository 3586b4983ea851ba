"""Set the book's repository URL in its one place, `_config.yml` (repository.url), and copy it to
every place a reader meets it: each chapter's Colab setup cell (REPO = "..."), the launch buttons
(which read _config.yml), the intro and the README's install line.

Usage: python scripts/set_repository.py https://github.com/<owner>/glide-minimal
       python scripts/set_repository.py --check     (exit 1 if any copy differs from _config.yml)
Run it once when the book is published under its real address; tests/test_book_style.py checks the copies.
"""
import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
REPO_LINE = re.compile(r'^(\s*REPO = )"([^"]*)"', re.M)
TEXT_FILES = [ROOT / "README.md", ROOT / "book" / "intro.md"]


def configured_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def copies() -> dict[str, list[str]]:
    """{place: [URLs found there]} for every notebook setup cell and text file that names the repository."""
    found = {}
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        urls = [m[2] for c in nb.cells if c.cell_type == "code" for m in REPO_LINE.finditer(c.source)]
        found[str(path.relative_to(ROOT))] = urls
    return found


def set_url(old: str, new: str) -> None:
    config = ROOT / "_config.yml"
    config.write_text(config.read_text().replace(f"url: {old}", f"url: {new}"))
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        changed = False
        for cell in nb.cells:
            if cell.cell_type == "code" and REPO_LINE.search(cell.source):
                cell.source = REPO_LINE.sub(lambda m: f'{m[1]}"{new}"', cell.source)
                changed = True
        if changed:
            nbformat.write(nb, path)
    for path in TEXT_FILES:
        path.write_text(path.read_text().replace(old, new))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    url = configured_url()
    if args.check or not args.url:
        bad = {place: urls for place, urls in copies().items() if urls != [url]}
        for place, urls in bad.items():
            print(f"{place}: {urls or 'no REPO line'} (expected {url})")
        sys.exit(1 if bad else 0)
    set_url(url, args.url.rstrip("/"))
    print(f"repository URL: {url} -> {args.url}")

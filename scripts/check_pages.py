"""Browser check of the built book: open every page in headless Chromium and assert what a reader sees.

    python scripts/check_pages.py                       # checks _build/html (run `make book` first)
    python scripts/check_pages.py --screenshot shots/   # also writes one PNG per page for a human look
    python scripts/check_pages.py _build/html/book/01_ddpm.html   # only the pages named

For each page it checks, in the DOM after the page's scripts ran (Chromium --dump-dom):
  - chapter pages (book/NN_*.html) show at least one PNG figure (a data: URI or a file that exists);
  - every <img> on any page points at something that exists;
  - math was typeset: one MathJax container per math element, and no MathJax error (mjx-merror);
  - no "Traceback" anywhere in the text, no error output cell (myst-nb's `output traceback`), and no
    stderr output cell that shows an error or a warning (a tqdm bar on stderr is fine);
  - no <script src> points off the machine (the book must render offline);
  - every book/*.ipynb has a page (a notebook left out of _toc.yml is otherwise skipped silently);
  - pages whose notebook stores widget state load the vendored require.js and html-manager from
    _static/ and every widget view was rendered by them;
  - nothing needs sideways scrolling in a 1280 px wide window (--width): no code cell, output, table,
    display equation or figure is wider than the content column, with every toggle (hint, solution) open;
  - every interactive control works without a kernel: moving each slider over precomputed frames
    (gm.viz.FrameSlider) changes the picture, and no live ipywidgets control is shown (it would be frozen).
Exits 1 and lists each failing page with its reasons; 0 when every page passes.
"""

from __future__ import annotations

import argparse
import html as html_module
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_RE = re.compile(r"^\d\d_.+\.html$")
FIXED_PAGES = ("intro.html", "notation.html", "bibliography.html")
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
VENDORED_WIDGET_JS = ("require.js", "embed-amd.js")
# Text in a stderr output that means something went wrong (a progress bar does not match).
STDERR_PROBLEM_RE = re.compile(r"\b\w*(Error|Exception|Warning)\b|Traceback")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


@dataclass
class Element:
    tag: str
    classes: set[str]
    attrs: dict[str, str]
    text: list[str] = field(default_factory=list)


class DomSummary(HTMLParser):
    """Collects what the checks need from one HTML document in a single pass."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[str] = []
        self.output_imgs: list[str] = []  # <img> inside a notebook cell output (myst-nb `cell_output`)
        self.scripts: list[dict[str, str]] = []
        self.tag_counts: dict[str, int] = {}
        self.class_counts: dict[str, int] = {}
        self.text: list[str] = []
        self.tracebacks: list[str] = []  # text of `output traceback` cells
        self.stderr: list[str] = []  # text of `output stderr` cells
        self.math_errors: list[str] = []  # MathJax's messages for TeX it could not typeset
        self._stack: list[Element] = []
        self._skip_text = 0  # inside <script>/<style>

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        classes = set(a.get("class", "").split())
        self.tag_counts[tag] = self.tag_counts.get(tag, 0) + 1
        for c in classes:
            self.class_counts[c] = self.class_counts.get(c, 0) + 1
        if tag == "img":
            self.imgs.append(a.get("src", ""))
            if any("cell_output" in el.classes for el in self._stack):
                self.output_imgs.append(a.get("src", ""))
        if tag == "script":
            self.scripts.append(a)
        if tag == "mjx-merror":
            self.math_errors.append(a.get("data-mjx-error", "?"))
        if tag in self.VOID:
            return
        if tag in ("script", "style"):
            self._skip_text += 1
        self._stack.append(Element(tag, classes, a))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        # Pop to the matching open tag (tolerates unclosed <p>, <li>, ...).
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].tag == tag:
                for el in self._stack[i:]:
                    self._close(el)
                del self._stack[i:]
                return

    def _close(self, el: Element) -> None:
        if el.tag in ("script", "style"):
            self._skip_text -= 1
        if "output" in el.classes and "traceback" in el.classes:
            self.tracebacks.append("".join(el.text))
        if "output" in el.classes and "stderr" in el.classes:
            self.stderr.append("".join(el.text))

    def handle_data(self, data):
        if self._skip_text:
            return
        self.text.append(data)
        for el in self._stack:
            if "output" in el.classes:
                el.text.append(data)

    def close(self):
        super().close()
        for el in reversed(self._stack):
            self._close(el)
        self._stack.clear()


def summarize(html: str) -> DomSummary:
    s = DomSummary()
    s.feed(html)
    s.close()
    return s


def find_chromium(explicit: str | None) -> str:
    for candidate in (explicit, os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit("check_pages: no Chromium found; install it with `make chromium` "
             "(apt-get update && apt-get install -y chromium) or pass --chromium PATH")


def run_chromium(chromium: str, url: str, extra: list[str], budget_ms: int, timeout_s: float) -> str:
    with tempfile.TemporaryDirectory(prefix="check-pages-profile-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--virtual-time-budget={budget_ms}", *extra, url]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"chromium did not finish within {timeout_s:.0f} s")
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"chromium exited with {proc.returncode}: {tail}")
        return proc.stdout


# Injected into a copy of the page: once MathJax has typeset, open every toggle and list each element that
# needs sideways scrolling (a scroller whose content is wider than it) or sticks out past the content column's
# right edge (only the outermost such element), and each control that does nothing without a kernel, as JSON in
# attributes of <html>, which --dump-dom keeps.
PAGE_CHECK_JS = r"""<script>
window.addEventListener("load", function () {
  var ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
  ready.then(function () {
    document.querySelectorAll("details").forEach(function (d) { d.open = true; });
    setTimeout(function () {
      var article = document.querySelector("article.bd-article") || document.body;
      var edge = article.getBoundingClientRect().right + 1;
      var found = [];
      article.querySelectorAll("*").forEach(function (el) {
        var style = getComputedStyle(el), box = el.getBoundingClientRect();
        var scroller = style.overflowX === "auto" || style.overflowX === "scroll";
        var parent = el.parentElement;
        var wide = scroller ? el.scrollWidth - el.clientWidth : box.right - edge;
        var outermost = !parent || parent.getBoundingClientRect().right <= edge;
        for (var up = parent; outermost && up && up !== article; up = up.parentElement) {
          // inside a scroller (counted itself) or a clipping box, sticking out is not the page's to scroll
          outermost = getComputedStyle(up).overflowX === "visible";
        }
        var hidden = el.closest("mjx-assistive-mml");  // MathJax's copy for screen readers, clipped to 1 px
        if (box.width > 0 && wide > 1 && (scroller || outermost) && !hidden) {
          var text = (el.textContent || el.getAttribute("src") || "").replace(/\s+/g, " ").trim();
          found.push(el.tagName.toLowerCase() + " '" + text.slice(0, 50) + "' (" + Math.round(wide) + " px)");
        }
      });
      document.documentElement.setAttribute("data-overflow", JSON.stringify(found));
      // Controls: each slider over precomputed frames (gm.viz.FrameSlider) must change the picture when
      // moved; a live ipywidgets control needs a kernel, so on the static page it would do nothing.
      var dead = [];
      document.querySelectorAll(".gm-frames").forEach(function (root) {
        root.querySelectorAll("input[data-control]").forEach(function (input) {
          var img = root.querySelector("img"), before = img && img.src;
          var old = input.value;
          input.value = String(Number(old) === Number(input.max) ? input.min : input.max);
          input.dispatchEvent(new Event("input"));
          if (!img || img.src === before) {
            dead.push("slider '" + (input.parentElement.textContent || "").trim() + "' of " + root.id);
          }
          input.value = old;
          input.dispatchEvent(new Event("input"));
        });
      });
      article.querySelectorAll(".jupyter-widgets input, .jupyter-widgets select, " +
                               ".jupyter-widgets button, .jupyter-widgets .slider").forEach(function (el) {
        dead.push("live ipywidgets " + el.tagName.toLowerCase() + " (needs a running kernel)");
      });
      document.documentElement.setAttribute("data-controls", JSON.stringify(dead));
    }, 200);
  });
});
</script>"""
OVERFLOW_RE = re.compile(r'<html[^>]*\sdata-overflow="([^"]*)"')
CONTROLS_RE = re.compile(r'<html[^>]*\sdata-controls="([^"]*)"')


def is_png_file(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


def local_target(page: Path, ref: str) -> Path | None:
    """The file a relative or file:// reference on `page` points at; None for data: and remote URLs."""
    parsed = urlparse(ref)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme or ref.startswith("//"):
        return None
    return (page.parent / unquote(parsed.path)).resolve()


def check_page(page: Path, chromium: str, budget_ms: int, timeout_s: float,
               screenshot_dir: Path | None, width: int = 1280) -> list[str]:
    problems: list[str] = []
    is_chapter = bool(CHAPTER_RE.match(page.name))
    static = summarize(page.read_text(encoding="utf-8"))
    n_math = static.class_counts.get("math", 0)
    n_widget_views = sum(1 for s in static.scripts if s.get("type") == WIDGET_VIEW_MIME)
    has_widget_state = any(s.get("type") == WIDGET_STATE_MIME for s in static.scripts)

    # Scripts: everything served from the book itself.
    for s in static.scripts:
        src = s.get("src", "")
        if src and local_target(page, src) is None and not src.startswith("data:"):
            problems.append(f"script loaded from off the machine (the page must render offline): {src}")
        elif src:
            target = local_target(page, src.split("?")[0])
            if target is not None and not target.is_file():
                problems.append(f"script file missing: {src}")
    if has_widget_state or n_widget_views:
        srcs = [s.get("src", "") for s in static.scripts]
        for name in VENDORED_WIDGET_JS:
            hits = [src for src in srcs if src.split("?")[0].endswith("/" + name)]
            if not hits:
                problems.append(f"page has widgets but does not load the vendored {name}")
            elif any("_static/vendored/" not in src for src in hits):
                problems.append(f"{name} is not the vendored copy under _static/vendored/: {hits}")

    # The DOM after the page's scripts ran, laid out at the reader's width: read from a copy of the page (in
    # its folder, so that relative links resolve) with PAGE_CHECK_JS added.
    probe = page.with_name(f".check-pages-{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PAGE_CHECK_JS + "</body>", 1),
                     encoding="utf-8")
    try:
        dom_html = run_chromium(chromium, probe.resolve().as_uri(), ["--dump-dom", f"--window-size={width},2000"],
                                budget_ms, timeout_s)
    except RuntimeError as e:
        return problems + [str(e)]
    finally:
        probe.unlink()
    dom = summarize(dom_html)

    # Sideways scrolling.
    overflow = OVERFLOW_RE.search(dom_html)
    if overflow is None:
        problems.append("the layout check did not report (did the page's scripts finish within --budget-ms?)")
    else:
        for block in json.loads(html_module.unescape(overflow.group(1))):
            problems.append(f"needs sideways scrolling at {width} px: {block}")
    controls = CONTROLS_RE.search(dom_html)
    for control in json.loads(html_module.unescape(controls.group(1))) if controls else []:
        problems.append(f"interactive control does nothing on the static page: {control}")

    # Figures: every image resolves; a chapter stores at least one PNG figure in a cell output
    # (the theme's own PNGs, e.g. the Colab logo, do not count).
    pngs = []
    for src in dom.imgs:
        if src.startswith("data:"):
            if src.startswith("data:image/png") and src in dom.output_imgs:
                pngs.append(src[:40])
            continue
        target = local_target(page, src)
        if target is None:
            problems.append(f"image loaded from off the machine: {src}")
        elif not target.is_file():
            problems.append(f"image file missing: {src}")
        elif target.suffix.lower() == ".png":
            if not is_png_file(target):
                problems.append(f"image is named .png but is not a PNG: {src}")
            elif src in dom.output_imgs:
                pngs.append(src)
    if is_chapter and not pngs:
        problems.append("chapter page shows no PNG figure in any cell output (were the notebook's outputs "
                        "stored? was it executed with MPLBACKEND=Agg, or were its figures saved as SVG?)")

    # Math.
    n_mjx = dom.tag_counts.get("mjx-container", 0)
    if n_math and n_mjx < n_math:
        problems.append(f"MathJax typeset {n_mjx} of {n_math} math elements (is the vendored MathJax loading?)")
    for err in dom.math_errors:
        problems.append(f"MathJax could not typeset some TeX: {err}")

    # Errors in outputs.
    text = "".join(dom.text)
    if "Traceback" in text:
        i = text.index("Traceback")
        problems.append(f"page text contains a Traceback: {text[i:i + 120]!r}")
    for tb in dom.tracebacks:
        problems.append(f"error output cell: {tb.strip()[:120]!r}")
    for err in dom.stderr:
        m = STDERR_PROBLEM_RE.search(err)
        if m:
            problems.append(f"stderr output shows a problem: {err.strip()[:160]!r}")

    # Widgets: html-manager replaces nothing but inserts a `widget-subarea` before each view script
    # and renders the view (class `jupyter-widgets`) into it.
    if n_widget_views:
        n_sub = dom.class_counts.get("widget-subarea", 0)
        n_rendered = dom.class_counts.get("jupyter-widgets", 0)
        if n_sub < n_widget_views or n_rendered < n_widget_views:
            problems.append(f"{n_widget_views} widget view(s) but the widget manager rendered "
                            f"{min(n_sub, n_rendered)} (vendored require.js/embed-amd.js not loaded?)")

    if screenshot_dir is not None:
        screenshot_dir.mkdir(parents=True, exist_ok=True)
        shot = (screenshot_dir / page.name).with_suffix(".png").resolve()
        try:
            run_chromium(chromium, page.resolve().as_uri(),
                         [f"--screenshot={shot}", f"--window-size={width},2000"], budget_ms, timeout_s)
        except RuntimeError as e:
            problems.append(f"screenshot failed: {e}")
    return problems


def toc_files(source: Path) -> list[str]:
    """Every page _toc.yml lists ("book/intro", "book/01_ddpm", ...), in its order."""
    toc = yaml.safe_load((source / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [entry["file"] for entry in part.get("chapters", [])]
    return [str(Path(f).with_suffix("")) for f in files]


def discover(build_dir: Path, source: Path | None = None) -> list[Path]:
    """The built page of every _toc.yml entry (a listed page that was not built is found missing later),
    else the fixed pages and the chapters found under build_dir/book."""
    source = source or build_dir.resolve().parents[1]
    if (source / "_toc.yml").is_file():
        return [build_dir / f"{name}.html" for name in toc_files(source)
                if (build_dir / f"{name}.html").is_file()]
    book = build_dir / "book"
    pages = [book / name for name in FIXED_PAGES if (book / name).is_file()]
    pages += sorted(p for p in book.glob("*.html") if CHAPTER_RE.match(p.name))
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pages", nargs="*", type=Path, help="HTML pages to check (default: intro, notation, "
                        "bibliography and every chapter book/NN_*.html under --build-dir)")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--source-dir", type=Path, help="the book's source root, to check that every "
                        "book/*.ipynb was built (default: two levels above --build-dir)")
    parser.add_argument("--screenshot", type=Path, metavar="DIR", help="also write a PNG of each page into DIR")
    parser.add_argument("--chromium", help="Chromium binary (default: /usr/bin/chromium or $CHROMIUM)")
    parser.add_argument("--budget-ms", type=int, default=10000,
                        help="virtual time the page's scripts get before the DOM is read (default 10000)")
    parser.add_argument("--width", type=int, default=1280,
                        help="window width in px at which nothing may need sideways scrolling (default 1280)")
    parser.add_argument("--timeout", type=float, default=120.0, help="wall-clock seconds per Chromium run")
    args = parser.parse_args(argv)

    pages = args.pages or discover(args.build_dir, args.source_dir)
    if not pages:
        print(f"check_pages: no pages under {args.build_dir}/book; build the book first (make book)",
              file=sys.stderr)
        return 1
    source = args.source_dir or args.build_dir.resolve().parents[1]
    required = [] if args.pages else [args.build_dir / f"{name}.html" for name in toc_files(source)]
    missing = [p for p in required if not p.is_file()]
    chromium = find_chromium(args.chromium)

    failures: dict[str, list[str]] = {str(p): ["page was not built"] for p in missing}
    if not args.pages:
        # A notebook missing from _toc.yml is skipped silently (only_build_toc_files): catch it here.
        for nb in sorted(source.glob("book/*.ipynb")):
            html = args.build_dir / "book" / (nb.stem + ".html")
            if not html.is_file():
                failures[str(nb)] = [f"has no page {html} (is it listed in _toc.yml?)"]
                missing.append(nb)
    for page in pages:
        problems = check_page(page, chromium, args.budget_ms, args.timeout, args.screenshot, args.width)
        status = "ok" if not problems else "FAIL"
        print(f"{status:4}  {page}")
        if problems:
            failures[str(page)] = problems
    if failures:
        print(f"\ncheck_pages: {len(failures)} of {len(pages) + len(missing)} page(s) failed:", file=sys.stderr)
        for page, problems in failures.items():
            print(f"  {page}", file=sys.stderr)
            for p in problems:
                print(f"    - {p}", file=sys.stderr)
        return 1
    print(f"check_pages: all {len(pages)} page(s) passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

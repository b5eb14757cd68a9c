"""The built HTML book, opened in a real headless browser (Debian's ``chromium``).

The session fixture builds the book once (``recsize book build``: every chapter with the outputs stored in
its .ipynb), then every chapter page is opened and checked: its
title and heading, its figures really rendered (``img`` with ``naturalWidth > 0``; at least as many as the
chapter's .ipynb has image outputs), no error output, no JavaScript error, and the previous / next links
and the sidebar between chapters. A full-page screenshot of every chapter goes to
``book/_build/screenshots/``. Explained in the README.

The browser is driven by Playwright's Python package with the system browser (no ``playwright install``);
if Playwright is missing or cannot drive the installed chromium, chromium's own ``--headless --dump-dom``
and ``--screenshot`` are used instead (the figures are then checked through their files;
``RECSIZE_BROWSER_BACKEND=dump-dom`` forces this). Without chromium the tests are skipped, unless
``RECSIZE_REQUIRE_BROWSER=1`` (CI), where they fail.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import nbformat
import pytest

from recsize.book import BOOK, NOTEBOOKS, build_book, toc_chapters

pytestmark = pytest.mark.browser

REAL_CACHE = os.environ.get("RECSIZE_DATA")  # read before conftest points it at an empty temporary folder
SCREENSHOTS = BOOK / "_build" / "screenshots"
CHAPTERS = toc_chapters()
ERROR_MARKERS = ('class="output traceback', 'class="output error', "output_error", '"ename"',
                 "Traceback (most recent call last)")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = ("the browser test needs headless Chromium: apt-get install chromium "
                  "(Debian's package; with sudo if you are not root)")
        if os.environ.get("RECSIZE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RECSIZE_REQUIRE_BROWSER=1 but chromium is not installed: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def _title(chapter: str) -> str:
    """The chapter's title: the first level-1 heading of its first markdown cell."""
    nb = nbformat.read(NOTEBOOKS / f"{chapter}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise AssertionError(f"{chapter} has no '# title' line")


def _image_outputs(chapter: str) -> int:
    nb = nbformat.read(NOTEBOOKS / f"{chapter}.ipynb", as_version=4)
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if any(k.startswith("image/") for k in o.get("data", {})))


@dataclass
class Page:
    """What a chapter page shows, read from the browser."""
    url: str
    title: str
    h1: list[str]
    images: list[tuple[str, int]]          # (src, rendered natural width)
    html: str
    prev: str | None                       # absolute URLs of the previous / next links
    next: str | None
    sidebar: list[str]
    js_errors: list[str] = field(default_factory=list)
    math: tuple[int, int] | None = None    # (math elements, typeset by MathJax); None: not measured


class PlaywrightBrowser:
    name = "playwright"

    def __init__(self, executable: str):
        from playwright.sync_api import sync_playwright
        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(executable_path=executable, headless=True)
        except BaseException:
            self._pw.stop()
            raise
        self.version = self._browser.version
        self._page = self._browser.new_page(viewport={"width": 1280, "height": 900})
        self._errors: list[str] = []
        self._page.on("pageerror", lambda e: self._errors.append(f"page error: {e}"))
        self._page.on("console", lambda m: self._errors.append(f"console {m.type}: {m.text}")
                      if m.type == "error" and not self._blocked_request(m.text) else None)
        self.blocked: list[str] = []
        # The book is read offline: requests outside file:// are blocked (MathJax is bundled, nothing should go out).
        self._page.route(re.compile(r"^(?!file:).*"), self._block)

    def _block(self, route):
        self.blocked.append(route.request.url)
        route.abort()

    @staticmethod
    def _blocked_request(text: str) -> bool:
        return "net::ERR_FAILED" in text or "Failed to load resource" in text

    def visit(self, url: str, lands_on: str | None = None) -> Page:
        """Open ``url``; with ``lands_on``, the page redirects there (index.html's meta refresh): wait for
        that navigation's own load and for the page's scripts before reading, so a busy machine cannot
        catch the page half-way (URL already changed, sidebar not yet there)."""
        self._errors.clear()
        self._page.goto(url, wait_until="load")
        if lands_on is not None:
            self._page.wait_for_url(lambda u: _same(u, lands_on), wait_until="load", timeout=60_000)
            self._page.wait_for_load_state("load", timeout=60_000)
            self._page.wait_for_function("document.readyState === 'complete' && "
                                         "document.querySelector('a.right-next') !== null", timeout=60_000)
            self._errors.clear()  # messages of the redirecting page, torn down mid-load, are not the preface's
        return self._read()

    def click_next(self) -> Page:
        self._errors.clear()
        with self._page.expect_navigation(wait_until="load"):
            self._page.click("a.right-next")
        return self._read()

    def _read(self) -> Page:
        p = self._page
        # wait until every image has finished loading (or failed), then read its natural width
        p.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30_000)
        data = p.evaluate("""async () => {
            // MathJax is bundled with the book (sphinx-mathjax-offline): wait for its first typesetting
            if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
            const main = document.querySelector('main') || document.body;
            const abs = sel => { const a = document.querySelector(sel); return a ? a.href : null; };
            return {
              h1: Array.from(main.querySelectorAll('h1')).map(h => h.textContent),
              images: Array.from(main.querySelectorAll('img')).map(i => [i.currentSrc || i.src, i.naturalWidth]),
              prev: abs('a.left-prev'), next: abs('a.right-next'),
              sidebar: Array.from(document.querySelectorAll('nav.bd-docs-nav a.reference.internal, '
                                                            + '.bd-sidebar-primary a.reference.internal'))
                        .map(a => a.href),
              math: [main.querySelectorAll('.math').length,
                     Array.from(main.querySelectorAll('.math')).filter(m => m.querySelector('mjx-container')).length],
            };
        }""")
        return Page(p.url, p.title(), data["h1"], [tuple(i) for i in data["images"]], p.content(),
                    data["prev"], data["next"], data["sidebar"], list(self._errors),
                    tuple(data["math"]))

    def screenshot(self, path: Path) -> None:
        self._page.screenshot(path=str(path), full_page=True)

    def close(self) -> None:
        self._browser.close()
        self._pw.stop()


class _Links(HTMLParser):
    """Headings, images and navigation links of a dumped DOM (the fallback without Playwright)."""

    def __init__(self):
        super().__init__()
        self.title, self.h1, self.images, self.prev, self.next, self.sidebar = "", [], [], None, None, []
        self._in = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag in ("title", "h1"):
            self._in = tag
            if tag == "h1":
                self.h1.append("")
        elif tag == "img" and a.get("src"):
            self.images.append(a["src"])
        elif tag == "a" and a.get("href"):
            if "left-prev" in cls:
                self.prev = a["href"]
            elif "right-next" in cls:
                self.next = a["href"]
            elif "reference" in cls and "internal" in cls:
                self.sidebar.append(a["href"])

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "h1":
            self.h1[-1] += data


def _png_width(path: Path) -> int:
    head = path.read_bytes()[:24] if path.is_file() else b""
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">I", head[16:20])[0]
    return 1 if path.is_file() and path.stat().st_size > 0 and path.suffix in (".svg", ".jpg", ".jpeg", ".gif") else 0


class DumpDomBrowser:
    """chromium --headless --dump-dom / --screenshot through subprocess: no clicks, no JS error events
    (uncaught errors are read from chromium's log instead)."""
    name = "chromium --dump-dom"

    def __init__(self, executable: str):
        self.exe = executable
        self.version = subprocess.run([executable, "--version"], capture_output=True, text=True).stdout.strip()
        self.blocked: list[str] = []
        self._last: Page | None = None

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.exe, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                               "--v=0", *args], capture_output=True, text=True, timeout=120)

    def visit(self, url: str, lands_on: str | None = None) -> Page:
        raw = Path(unquote(urlparse(url).path)).read_text(errors="replace")
        redirect = re.search(r'http-equiv="Refresh"[^>]*url=([^"\'>\s]+)', raw, re.I)
        if redirect:  # index.html redirects to the first chapter (a dumped DOM would be empty)
            url = urljoin(url, redirect.group(1))
        done = self._run("--dump-dom", url)
        parsed = _Links()
        parsed.feed(done.stdout)
        images = []
        for src in parsed.images:
            full = urljoin(url, src)
            images.append((full, _png_width(Path(unquote(urlparse(full).path)))
                           if full.startswith("file:") else 0))
        errors = [ln for ln in done.stderr.splitlines() if "Uncaught" in ln]
        j = lambda h: urljoin(url, h) if h else None  # noqa: E731
        self._last = Page(url, parsed.title, parsed.h1, images, done.stdout, j(parsed.prev), j(parsed.next),
                          [urljoin(url, h) for h in parsed.sidebar], errors)
        return self._last

    def click_next(self) -> Page:
        return self.visit(self._last.next)

    def screenshot(self, path: Path) -> None:
        self._run(f"--screenshot={path}", "--window-size=1280,6000", "--hide-scrollbars", self._last.url)

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def browser():
    exe = _chromium()
    if os.environ.get("RECSIZE_BROWSER_BACKEND") == "dump-dom":  # to exercise the fallback on purpose
        b = DumpDomBrowser(exe)
    else:
        try:
            b = PlaywrightBrowser(exe)
        except Exception as e:  # no playwright, or it cannot drive this chromium version
            print(f"Playwright unavailable ({type(e).__name__}: {e}); using chromium --headless --dump-dom")
            b = DumpDomBrowser(exe)
    yield b
    b.close()


@pytest.fixture(scope="session")
def book_html(browser) -> Path:
    """Build the book once per session (after the browser is known to exist), into book/_build/html."""
    env = dict(os.environ)
    if REAL_CACHE is None:
        env.pop("RECSIZE_DATA", None)
    else:
        env["RECSIZE_DATA"] = REAL_CACHE
    index = build_book(BOOK, quiet=True, env=env)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return index.parent


def _url(html: Path, chapter: str) -> str:
    return (html / f"{chapter}.html").as_uri()


def _same(a: str | None, b: str) -> bool:
    return a is not None and urlparse(a)._replace(fragment="").geturl() == b


def test_index_opens_the_preface_and_lists_every_chapter(browser, book_html):
    page = browser.visit((book_html / "index.html").as_uri(), lands_on=_url(book_html, CHAPTERS[0]))
    assert _same(page.url, _url(book_html, CHAPTERS[0])), f"index.html should open the preface, got {page.url}"
    assert page.prev is None and _same(page.next, _url(book_html, CHAPTERS[1]))
    linked = {urlparse(u)._replace(fragment="").geturl() for u in page.sidebar}
    for chapter in CHAPTERS[1:]:
        assert _url(book_html, chapter) in linked, f"the sidebar has no link to {chapter}"
    for url in linked:
        assert Path(unquote(urlparse(url).path)).is_file(), f"sidebar link to a missing page: {url}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page(browser, book_html, chapter):
    i = CHAPTERS.index(chapter)
    page = browser.visit(_url(book_html, chapter))
    browser.screenshot(SCREENSHOTS / f"{chapter}.png")
    title = _title(chapter)
    assert title in page.title, f"<title> is {page.title!r}, expected the chapter title {title!r}"
    assert any(title in h.replace("\u00b6", "").strip() for h in page.h1[:1]), f"first <h1> is {page.h1[:1]}"

    want = _image_outputs(chapter)
    rendered = [src for src, width in page.images if width > 0]
    broken = [src for src, width in page.images if width <= 0]
    assert not broken, f"images that did not render: {broken}"
    assert len(rendered) >= want, f"{len(rendered)} rendered figures, the notebook has {want} image outputs"
    if want:
        assert rendered, "the chapter has figures but none rendered"

    found = [m for m in ERROR_MARKERS if m in page.html]
    assert not found, f"error output in the page: {found}"
    assert not page.js_errors, f"JavaScript errors: {page.js_errors}"
    if page.math is not None:  # the formulas are typeset offline, not left as raw TeX
        total, typeset = page.math
        assert typeset == total, f"{total - typeset} of {total} formulas were not typeset by MathJax"

    if i > 0:
        assert _same(page.prev, _url(book_html, CHAPTERS[i - 1])), f"previous link: {page.prev}"
    if i + 1 < len(CHAPTERS):
        assert _same(page.next, _url(book_html, CHAPTERS[i + 1])), f"next link: {page.next}"
        after = browser.click_next()
        assert _same(after.url, _url(book_html, CHAPTERS[i + 1])), f"clicking next went to {after.url}"
        assert any(_title(CHAPTERS[i + 1]) in h for h in after.h1[:1]), after.h1[:1]
    else:
        assert page.next is None or "genindex" in page.next, f"the last chapter links on to {page.next}"

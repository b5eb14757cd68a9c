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

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.error import URLError
from urllib.parse import unquote, urljoin, urlparse
from urllib.request import Request, urlopen

import jupytext
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
    cut: dict | None = None                # code cells / outputs whose lines do not fit the column (scroll)


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

    def app_page(self, origin: str, errors: list[str]):
        """A new page, in its own browser context, for a web application served at ``origin`` (the
        JupyterLab test): requests outside ``origin`` are blocked, page and console errors go to ``errors``."""
        page = self._browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
                if m.type == "error" and not self._blocked_request(m.text) else None)
        page.route(re.compile(f"^(?!{re.escape(origin)}).*"), self._block)
        return page

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
              // a code cell (or an output) whose widest line is wider than the column scrolls: cut off
              cut: Object.fromEntries([['code', 'div.cell div.cell_input div.highlight pre'],
                                        ['output', 'div.cell div.cell_output div.output pre']].map(([k, sel]) =>
                [k, Array.from(main.querySelectorAll(sel)).filter(e => e.scrollWidth > e.clientWidth + 1)
                      .map(e => e.textContent.split('\\n').reduce((a, b) => a.length >= b.length ? a : b))]).concat(
                // a table wider than the column scrolls sideways (its last columns out of sight)
                [['table', Array.from(main.querySelectorAll('table'))
                   .filter(t => t.getBoundingClientRect().right > main.getBoundingClientRect().right + 1
                                || (t.parentElement && t.parentElement.scrollWidth > t.parentElement.clientWidth + 1))
                   .map(t => (t.querySelector('th, td') || t).textContent.trim())]])),
            };
        }""")
        return Page(p.url, p.title(), data["h1"], [tuple(i) for i in data["images"]], p.content(),
                    data["prev"], data["next"], data["sidebar"], list(self._errors),
                    tuple(data["math"]), data["cut"])

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
    # a Markdown table left as text, not rendered: a paragraph of pipes with a separator row (--- or, after
    # smartquotes, an em dash) in it
    raw_tables = re.findall(r"<p>\|[^<]*\|\s*(?:\u2014|-{3,})\s*\|", page.html)
    assert not raw_tables, f"Markdown tables shown as raw text: {raw_tables[:2]}"
    assert not page.js_errors, f"JavaScript errors: {page.js_errors}"
    if page.math is not None:  # the formulas are typeset offline, not left as raw TeX
        total, typeset = page.math
        assert typeset == total, f"{total - typeset} of {total} formulas were not typeset by MathJax"

    if page.cut is not None:  # chapter code (<= 88 columns) shows whole in the book's column
        assert not page.cut["code"], f"code cells cut off in the column (widest lines): {page.cut['code']}"
        assert not page.cut.get("table"), f"tables wider than the column (first cells): {page.cut['table']}"

    if i > 0:
        assert _same(page.prev, _url(book_html, CHAPTERS[i - 1])), f"previous link: {page.prev}"
    if i + 1 < len(CHAPTERS):
        assert _same(page.next, _url(book_html, CHAPTERS[i + 1])), f"next link: {page.next}"
        after = browser.click_next()
        assert _same(after.url, _url(book_html, CHAPTERS[i + 1])), f"clicking next went to {after.url}"
        assert any(_title(CHAPTERS[i + 1]) in h for h in after.h1[:1]), after.h1[:1]
    else:
        assert page.next is None or "genindex" in page.next, f"the last chapter links on to {page.next}"


# --- JupyterLab, as a reader runs it --------------------------------------------------------------------------

LAB_CHAPTER = "ch00_preface"  # the fastest chapter with a figure; it needs no data set
LAB_TIMEOUT = 120  # seconds for each wait below (server start, notebook open, kernel, the whole run)


def _wait(what: str, check, timeout: float = LAB_TIMEOUT, server=None):
    """Poll ``check()`` until it returns something true; fail with ``what`` (and the server log) after
    ``timeout`` seconds or as soon as the server process has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if server is not None and server.poll() is not None:
            pytest.fail(f"JupyterLab exited (status {server.returncode}) while waiting for {what}:\n"
                        + _log_tail(server), pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}"
                        + (f":\n{_log_tail(server)}" if server is not None else ""), pytrace=False)
        time.sleep(0.2)


def _log_tail(server, lines: int = 40) -> str:
    return "\n".join(Path(server.args_log).read_text(errors="replace").splitlines()[-lines:])


def _get(url: str) -> dict | None:
    try:
        with urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except (URLError, OSError, ValueError):
        return None


def _chapter_files(chapter: str) -> dict[str, str]:
    """Digests of what running ``chapter`` in place could write: its pair in notebooks/ and its results."""
    paths = [*NOTEBOOKS.glob(f"{chapter}.*"), *NOTEBOOKS.glob(f"results/{chapter.split('_')[0]}/**/*"),
             *NOTEBOOKS.glob(".ipynb_checkpoints/*")]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths) if p.is_file()}


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a free loopback port with a random token, serving a temporary copy of the chapter's text
    form (and ``notebooks/jupytext.toml``, which pairs it with an .ipynb), with its own Jupyter config,
    runtime, settings, workspaces and IPython folders, so that neither the reader's notebooks nor their
    Jupyter settings are touched. The text form opens as a notebook through the reader's documented set-up,
    ``jupytext-config set-default-viewer python`` (run here against the temporary config folder)."""
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    for name in (f"{LAB_CHAPTER}.py", "jupytext.toml"):
        shutil.copy2(NOTEBOOKS / name, root / "notebooks" / name)
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTER_DATA_DIR", "data"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                     ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")):
        env[var] = str(tmp_path / sub)
        (tmp_path / sub).mkdir()
    env.pop("JUPYTER_PATH", None)
    subprocess.run([sys.executable, "-m", "jupytext_config", "set-default-viewer", "python"], env=env,
                   check=True, capture_output=True, timeout=60)
    settings = tmp_path / "settings"
    # Every cell stays in the page (no windowing), so that the test sees all prompts; no news pop-up.
    for plugin, values in (("@jupyterlab/notebook-extension/tracker", {"windowingMode": "none"}),
                           ("@jupyterlab/apputils-extension/notification", {"fetchNews": "false"})):
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    token = secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.extension_manager=readonly", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    server.args_log = str(log)
    base = None
    try:
        runtime = tmp_path / "runtime" / f"jpserver-{server.pid}.json"  # written once it listens
        info = _wait("JupyterLab's runtime file (its port)", lambda: _read_json(runtime), server=server)
        base = f"http://127.0.0.1:{info['port']}/"
        _wait("JupyterLab's API", lambda: _get(f"{base}api/status?token={token}"), server=server)
        yield SimpleNamespace(base=base, token=token, root=root, server=server)
    finally:
        if server.poll() is None and base is not None:
            try:  # shuts the kernels down, then the server
                urlopen(Request(f"{base}api/shutdown?token={token}", method="POST"), timeout=10).close()
                server.wait(timeout=30)
            except Exception:
                pass
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)  # the server's own process group (its kernels)
            server.wait(timeout=30)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _kernel_state(lab, path: str) -> str | None:
    sessions = _get(f"{lab.base}api/sessions?token={lab.token}") or []
    states = [s["kernel"]["execution_state"] for s in sessions if s.get("path") == path and s.get("kernel")]
    return states[0] if states else None


_PROMPTS = "Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt'))" \
           ".map(e => e.textContent.trim())"


def test_jupyterlab_runs_a_chapter_from_its_text_form(browser, jupyterlab):
    """`jupyter lab notebooks/` as the README says: the chapter's .py opens as a notebook, Run All Cells runs
    it with its CI parameters (the defaults of its parameters cell), every cell gets an execution count, none
    has an error output, the figure is shown. The run happens in a temporary copy: the chapter's pair and
    results in notebooks/ are byte-for-byte unchanged afterwards. Screenshot: book/_build/screenshots/jupyterlab_<chapter>.png."""
    if browser.name != "playwright":
        reason = "the JupyterLab test clicks through JupyterLab with Playwright (pip install playwright)"
        if os.environ.get("RECSIZE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RECSIZE_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    lab, rel = jupyterlab, f"notebooks/{LAB_CHAPTER}.py"
    before = _chapter_files(LAB_CHAPTER)
    model = _get(f"{lab.base}api/contents/{rel}?content=0&token={lab.token}")
    assert model and model.get("type") == "notebook", (
        f"JupyterLab does not serve {rel} as a notebook (is jupytext installed and its server extension "
        f"enabled?): {model}")
    cells = jupytext.read(lab.root / rel).cells
    n_code = sum(c.cell_type == "code" for c in cells)
    errors: list[str] = []
    page = browser.app_page(lab.base, errors)
    ms = LAB_TIMEOUT * 1000
    try:
        page.goto(f"{lab.base}lab/tree/{rel}?token={lab.token}", wait_until="load", timeout=ms)
        try:  # a double click's default viewer: the notebook, not the text editor
            page.wait_for_function(f"document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length === "
                                   f"{len(cells)}", timeout=ms)
        except Exception:
            opened = page.evaluate("Array.from(document.querySelectorAll('.jp-Document')).map(e => e.className)")
            pytest.fail(f"{rel} did not open as a notebook of {len(cells)} cells; open documents: {opened}; "
                        f"errors: {errors}", pytrace=False)
        _wait(f"the kernel of {rel} to be idle", lambda: _kernel_state(lab, rel) == "idle", server=lab.server)

        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click(timeout=ms)
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click(timeout=ms)
        # done: no cell queued or running ([*]) and at least one has finished (none had before)
        page.wait_for_function(f"() => {{ const p = {_PROMPTS}; return p.length > 0 && "
                               "!p.some(t => t.includes('*')) && p.some(t => /\\[\\d+\\]/.test(t)); }",
                               timeout=LAB_TIMEOUT * 2 * 1000)
        prompts = page.evaluate(_PROMPTS)
        images = page.evaluate("Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output "
                               "img')).map(i => i.complete ? i.naturalWidth : 0)")
        # Save (jupytext writes the .py and its paired .ipynb, in the temporary copy) and read the outputs back
        shown = page.locator(".jp-NotebookPanel .jp-OutputArea-output").last
        if images:
            shown = page.locator(".jp-NotebookPanel .jp-OutputArea-output img").first
        shown.scroll_into_view_if_needed(timeout=ms)
        shown.click(timeout=ms)  # selects that cell: the notebook has the focus
        page.keyboard.press("Control+s")
        saved = lab.root / "notebooks" / f"{LAB_CHAPTER}.ipynb"

        def executed():
            try:
                nb = nbformat.read(saved, as_version=4)
            except Exception:
                return None
            code = [c for c in nb.cells if c.cell_type == "code"]
            return nb if len(code) == n_code and sum(bool(c.execution_count) for c in code) == done else None

        done = sum(bool(re.fullmatch(r"\[\d+\]:?", p)) for p in prompts)  # cells the page shows as run
        nb = _wait(f"the saved {saved.name} with the {done} executed cells", executed, server=lab.server)
        page.wait_for_selector(".jp-NotebookPanel.jp-mod-dirty, .lm-TabBar-tab.jp-mod-dirty", state="detached",
                               timeout=ms)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"jupyterlab_{LAB_CHAPTER}.png"))
    finally:
        page.context.close()

    failed = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not failed, f"cells with an error output (cell index, exception, message): {failed}"
    assert len(prompts) == n_code and done == n_code, (
        f"{done} of {n_code} code cells finished in JupyterLab; prompts: {prompts}; errors: {errors}")
    want = _image_outputs(LAB_CHAPTER)
    assert len([w for w in images if w > 0]) >= want, f"{images}: {want} figure(s) expected, rendered"
    assert (lab.root / "notebooks" / "results").is_dir(), "the chapter wrote no results next to its copy"
    assert _chapter_files(LAB_CHAPTER) == before, (
        f"running the chapter in JupyterLab changed {LAB_CHAPTER}'s files in notebooks/")
    assert not errors, f"JavaScript errors in JupyterLab: {errors}"

"""Tests of the Jupyter Book: it builds with no warnings, and its pages work in a browser.

The book is built once per test session (``scripts/build_book.sh``, into a temporary folder), served
on 127.0.0.1, and every page of ``_toc.yml`` is opened once in headless Chromium (Debian's
``/usr/bin/chromium``, driven by Playwright). Requests that leave 127.0.0.1 are blocked and
reported: the built book must work offline. Screenshots go to ``$BOOK_SHOTS_DIR`` (default
``/tmp/book_shots``).

Without chromium, jupyter-book or npm the tests that need them are skipped, unless ``CI`` is set:
then they fail.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

import saae_lib

ROOT = Path(__file__).resolve().parents[1]
SHOTS_DIR = Path(os.environ.get("BOOK_SHOTS_DIR", Path(tempfile.gettempdir()) / "book_shots"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def _toc_files() -> list[str]:
    """Every document of _toc.yml, in reading order, without extension (e.g. 'book/intro')."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


TOC_FILES = _toc_files()
NOTEBOOKS = [f for f in TOC_FILES if (ROOT / f"{f}.ipynb").exists()]
# Pages that must show typeset math.
MATH_PAGES = set(NOTEBOOKS) | {"book/intro", "book/notation"}


def _missing(reason: str):
    """Skip a test for a missing tool, but fail in CI, where everything must be installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


# --------------------------------------------------------------------------------------------
# Notebook source checks (no build needed)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", NOTEBOOKS)
def test_colab_install_cell_uses_repository_url(doc):
    """The Colab install cell installs the library from the book's repository (saae_lib.settings.REPOSITORY, which
    scripts/sync_repository.py writes there and into _config.yml), pinned to the tag of this version
    (saae_lib.__version__), so a reader gets the code the chapter was written for."""
    url = saae_lib.settings.REPOSITORY
    pinned = f"git+{url}@v{saae_lib.__version__}"
    nb = json.loads((ROOT / f"{doc}.ipynb").read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    install = [i for i, src in enumerate(code) if "google.colab" in src]
    assert install, f"{doc}.ipynb has no code cell that checks for google.colab"
    first = install[0]
    assert re.search(rf'"{re.escape(pinned)}"', code[first]), f"the Colab cell of {doc}.ipynb must pip install {pinned}"
    assert "Change runtime type" in code[first], f"the Colab cell of {doc}.ipynb must say how to get a GPU"
    uses_lib = [i for i, src in enumerate(code) if re.search(r"^\s*(from|import)\s+saae_lib", src, re.M)]
    assert not uses_lib or first < uses_lib[0], f"{doc}.ipynb imports saae_lib before the Colab install cell"


def _minutes_phrase(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 1:
        return "under a minute"
    n = round(minutes)
    return f"about {n} minute{'s' if n != 1 else ''}"


CITATION = re.compile(r"(?:([A-Z][\w\u00c0-\u024f-]+(?: and [A-Z][\w\u00c0-\u024f-]+| et al\.)?)\s\(?)?"
                      r"\[([^\]]+)\]\((?:\.\./book/)?references(?:\.md)?\)")


def _citations(text: str) -> list[str]:
    """Each citation link of a text as the label it points to: "Makhzani et al., 2015" for both
    "[Makhzani et al., 2015](references.md)" and "Makhzani et al. ([2015](references.md))"."""
    cited = []
    for before, inside in CITATION.findall(text):
        inside = re.sub(r"\s*\((\d{4})\)$", r", \1", inside)  # "Sainburg et al. (2021)"
        cited.append(f"{before}, {inside}" if re.fullmatch(r"\d{4}", inside) else inside)
    return cited


def test_citations_read_as_the_references_page_labels_them():
    """Every citation link in the chapters and pages names a work the way the references page labels it (its
    author_year style, book/_ext/author_year.py), so a reader finds it there."""
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    author_year = pytest.importorskip("author_year")
    from pybtex.database import parse_file

    entries = author_year.AuthorYearStyle().format_bibliography(parse_file(ROOT / "book" / "references.bib"))
    labels = {entry.label for entry in entries}
    texts = [path.read_text() for path in (ROOT / "book").glob("*.md")]
    texts += ["\n".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"])
              for path in sorted((ROOT / "notebooks").glob("0*.ipynb"))]
    cited = [citation for text in texts for citation in _citations(text)]
    assert len(cited) >= 10
    assert not [c for c in cited if c not in labels], f"citations the references page labels otherwise: {labels}"


# The machines `make notebooks` has run the chapters on (benchmarks/results/chapters-<label>.json), in the words a
# chapter's first cell uses for them.
MACHINE_WORDS = {
    "cpu-2c-bf16": "a 2-core CPU with bfloat16 units",
    "cpu-2c": "a 2-core CPU without bfloat16 units",
    "cpu-1c": "one thread of a 2-core CPU without bfloat16 units",
    "cpu-1c-bf16": "one thread of a 2-core CPU with bfloat16 units",
    "nvidia-h200": "an NVIDIA H200 GPU",
}


@pytest.mark.parametrize("doc", NOTEBOOKS)
def test_first_cell_states_the_measured_running_time(doc):
    """The chapter's first cell says how long it takes on a CPU (and on a GPU, where one ran it), as measured by
    `make notebooks` (benchmarks/results/chapters-<machine>.json), naming the machine, and how to get a GPU on
    Colab."""
    stem = Path(doc).name
    first = "".join(json.loads((ROOT / f"{doc}.ipynb").read_text())["cells"][0]["source"])
    assert "**Running time:**" in first and "Change runtime type" in first
    measured = {}
    for label, words in MACHINE_WORDS.items():
        path = ROOT / "benchmarks/results" / f"chapters-{label}.json"
        seconds = json.loads(path.read_text())["seconds"] if path.is_file() else {}
        if stem in seconds:
            measured[label] = f"{_minutes_phrase(seconds[stem])} on {words}"
    cpu = [phrase for label, phrase in measured.items() if label.startswith("cpu")]
    assert cpu, f"no CPU has run {stem} (make notebooks)"
    assert any(phrase in first for phrase in cpu), f"{doc}.ipynb's first cell must state one of: {cpu}"
    if "nvidia-h200" in measured:
        assert measured["nvidia-h200"] in first, f"{doc}.ipynb's first cell must state {measured['nvidia-h200']}"
    else:
        assert "not measured on a GPU yet" in first


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """Build the book once (warnings are errors) into a temporary folder; return its HTML folder.

    A folder of its own keeps the developer's _build untouched and lets pytest-xdist workers
    build side by side.
    """
    try:
        import jupyter_book  # noqa: F401
    except ImportError:
        _missing("jupyter-book is not installed in this Python")
    if not (ROOT / "node_modules/mathjax/es5/tex-chtml.js").exists() and not shutil.which("npm"):
        _missing("npm is needed (once) to install the local MathJax copy")
    output = tmp_path_factory.mktemp("book")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/build_book.sh")],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, "BOOK_OUTPUT": str(output)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        log = (result.stdout + result.stderr)[-6000:]
        pytest.fail(f"book build failed (exit {result.returncode}):\n{log}")
    return output / "_build" / "html"


def test_book_builds_every_page(built_book):
    for doc in TOC_FILES:
        assert (built_book / f"{doc}.html").is_file(), f"{doc}.html was not built"
    assert (built_book / "index.html").is_file()


def test_every_page_names_a_favicon_that_exists(built_book):
    """Browsers ask for an icon on the first visit; without one the server logs a 404."""
    for doc in TOC_FILES:
        page = built_book / f"{doc}.html"
        icon = re.search(r'<link rel="icon" href="([^"]+)"', page.read_text())
        assert icon, f"{doc}.html names no icon"
        assert (page.parent / icon[1]).resolve().is_file(), f"{doc}.html: {icon[1]} is missing"


def test_mathjax_is_served_locally(built_book):
    """Math is typeset by the local MathJax copy; no page loads scripts or styles from elsewhere."""
    assert (built_book / "_static/mathjax/tex-chtml.js").is_file()
    for doc in TOC_FILES:
        text = (built_book / f"{doc}.html").read_text()
        scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', text)
        styles = re.findall(r'<link[^>]*\bhref="([^"]+)"', text)
        remote = [u for u in scripts + styles if re.match(r"(https?:)?//", u)]
        assert not remote, f"{doc}.html loads remote resources: {remote}"
        if doc in MATH_PAGES:
            assert any("_static/mathjax/tex-chtml.js" in s for s in scripts), f"{doc}.html lacks MathJax"


# --------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def server(built_book) -> str:
    """Serve the built book on 127.0.0.1 with a free port; return its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser():
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        _missing("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


_PAGE_REPORT_JS = """
async () => {
  // Load every image now (some may be lazy) and wait for each to finish or fail.
  const imgs = [...document.images];
  imgs.forEach(img => { img.loading = 'eager'; });
  await Promise.all(imgs.map(img => img.complete ? null :
      new Promise(done => { img.addEventListener('load', done); img.addEventListener('error', done); })));
  // Wait until MathJax has typeset the page (when the page loads MathJax at all).
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const maths = [...document.querySelectorAll('.bd-article .math')];
  const urls = sel => [...document.querySelectorAll(sel)].map(e => e.href || e.src);
  return {
    brokenImages: imgs.filter(img => !(img.naturalWidth > 0)).map(img => img.src),
    mathCount: maths.length,
    untypesetMath: maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    // TeX errors: MathJax shows parse errors as <mjx-merror> and unknown macros in red.
    mathErrors: [...document.querySelectorAll('mjx-merror, mjx-mtext[style*="color: red"]')]
        .map(e => e.getAttribute('data-mjx-error') || e.closest('mjx-container').textContent.slice(0, 80)),
    mjxCount: document.querySelectorAll('mjx-container').length,
    // Display equations wider than the text column get cut off.
    wideMath: [...document.querySelectorAll('.bd-article mjx-container[display="true"]')]
        .filter(c => c.firstElementChild && c.firstElementChild.getBoundingClientRect().width > c.clientWidth + 1)
        .map(c => c.parentElement.textContent.trim().slice(0, 80)),
    // The figures' alt texts: a description, not the hash file name the build gives a figure without one.
    imageAlts: [...document.querySelectorAll('.bd-article img')].map(img => img.alt),
    // Hidden solutions: what their toggles say.
    togglePrompts: [...document.querySelectorAll('.bd-article details.hide summary')].map(s => s.textContent.trim()),
    links: urls('a[href]'),
    resources: urls('img[src]').concat(urls('script[src]'), urls('link[href]')),
    sidebar: urls('nav.bd-docs-nav a[href]'),
  };
}
"""


@pytest.fixture(scope="session")
def pages(browser, server) -> dict[str, dict]:
    """Open every page of the book once; collect what the tests check, and take a screenshot."""
    SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    blocked: list[str] = []

    def only_local(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    reports = {}
    for doc in TOC_FILES:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg, errors=errors: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc, errors=errors: errors.append(f"uncaught: {exc}"))
        blocked.clear()
        response = page.goto(server + f"{doc}.html", wait_until="load")
        report = page.evaluate(_PAGE_REPORT_JS)
        report["status"] = response.status if response else None
        report["errors"] = list(errors)
        report["external_requests"] = list(blocked)
        report["colab_links"] = [u for u in report["links"] if "colab.research.google.com" in u]
        page.screenshot(path=str(SHOTS_DIR / f"{doc.replace('/', '_')}.png"), full_page=True)
        page.close()
        reports[doc] = report
    context.close()
    return reports


@pytest.mark.parametrize("doc", TOC_FILES)
def test_page_loads_without_errors(pages, doc):
    report = pages[doc]
    assert report["status"] == 200
    assert report["errors"] == [], f"console errors on {doc}"
    assert report["external_requests"] == [], f"{doc} tries to reach the internet"


@pytest.mark.parametrize("doc", TOC_FILES)
def test_images_load(pages, doc):
    assert pages[doc]["brokenImages"] == [], f"images that did not load on {doc}"


@pytest.mark.parametrize("doc", TOC_FILES)
def test_figures_have_alt_text_and_solutions_say_so(pages, doc):
    alts = pages[doc]["imageAlts"]
    assert not [alt for alt in alts if not alt or re.search(r"\.(png|jpe?g|svg)$", alt)], (
        f"{doc}: images without a description as alt text")
    prompts = pages[doc]["togglePrompts"]
    assert not [prompt for prompt in prompts if "solution" not in prompt.lower()], (
        f"{doc}: hidden cells whose toggle does not say solution: {prompts}")


PHONE = {"width": 390, "height": 844}  # a phone's screen in CSS pixels (iPhone 12 to 15)


@pytest.fixture(scope="session")
def phone_widths(browser, server) -> dict[str, int]:
    """Each page's width in CSS pixels, opened on a phone's screen: wider than the screen means it scrolls sideways."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server) else route.abort())
    widths = {}
    for doc in TOC_FILES:
        page = context.new_page()
        page.goto(server + f"{doc}.html", wait_until="load")
        widths[doc] = page.evaluate("() => document.documentElement.scrollWidth")
        page.close()
    context.close()
    return widths


@pytest.mark.parametrize("doc", TOC_FILES)
def test_no_page_is_wider_than_a_phone(phone_widths, doc):
    assert phone_widths[doc] <= PHONE["width"], (
        f"{doc} is {phone_widths[doc]} px wide on a {PHONE['width']} px phone: something on it does not wrap")


@pytest.mark.parametrize("doc", TOC_FILES)
def test_math_is_typeset(pages, doc):
    report = pages[doc]
    if doc in MATH_PAGES:
        assert report["mathCount"] > 0, f"{doc} should contain math"
    assert report["untypesetMath"] == [], f"math left untypeset on {doc}"
    assert report["mathErrors"] == [], f"TeX errors on {doc}"
    if report["mathCount"]:
        assert report["mjxCount"] >= report["mathCount"]
    assert report["wideMath"] == [], f"display equations wider than the page on {doc}"


@pytest.mark.parametrize("doc", TOC_FILES)
def test_sidebar_reaches_every_page(pages, server, doc):
    sidebar = {u.split("#")[0] for u in pages[doc]["sidebar"]}
    missing = [d for d in TOC_FILES if server + f"{d}.html" not in sidebar]
    assert not missing, f"the sidebar of {doc} has no link to {missing}"


@pytest.mark.parametrize("doc", TOC_FILES)
def test_launch_and_repository_buttons(pages, doc):
    config = _config()
    repo = config["repository"]["url"].rstrip("/")
    branch = config["repository"].get("branch", "main")
    report = pages[doc]
    assert any(u.rstrip("/") == repo for u in report["links"]), f"{doc} has no repository button"
    if doc in NOTEBOOKS:
        slug = urllib.parse.urlparse(repo).path.strip("/")
        expected = f"https://colab.research.google.com/github/{slug}/blob/{branch}/{doc}.ipynb"
        assert report["colab_links"] == [expected]
    else:
        assert report["colab_links"] == [], f"{doc} is not a notebook but has a Colab button"


def test_internal_links_resolve(pages, server):
    """Every same-origin link and resource answers 200, and every #fragment exists on its page."""
    urls = set()
    for report in pages.values():
        urls.update(u for u in report["links"] + report["resources"] if u.startswith(server))
    bodies: dict[str, str] = {}
    broken, bad_fragments = [], []
    for url in sorted(urls):
        target, _, fragment = url.partition("#")
        if target not in bodies:
            try:
                with urllib.request.urlopen(target, timeout=10) as response:
                    body = response.read()
                    bodies[target] = body.decode("utf-8", "replace") if target.endswith(".html") else ""
            except urllib.error.HTTPError as exc:
                broken.append(f"{target} ({exc.code})")
                bodies[target] = ""
                continue
        fragment = urllib.parse.unquote(fragment)
        if fragment and target.endswith(".html"):
            ids = set(re.findall(r'\bid="([^"]+)"', bodies[target]))
            if html.escape(fragment) not in ids and fragment not in ids:
                bad_fragments.append(url)
    assert not broken, f"broken internal links: {broken}"
    assert not bad_fragments, f"links to missing anchors: {bad_fragments}"

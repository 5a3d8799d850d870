"""The built book (`make book`; CI builds it from runs/ci/notebooks) opened in headless Chromium
from a server on 127.0.0.1: every chapter loads, its figures decoded, its formulas typeset, the
saved widgets (threshold explorer, class browser) render, no request leaves 127.0.0.1 and no file
it asks for is missing. And the Results pages' tables are the committed CSVs'.

Point ANOGAN_BOOK_HTML at the built book (make test does, after building it); without it the tests
skip, saying so. The browser needs Debian's `chromium` and the Python `playwright` package (no
browser download); without them the browser test skips with the reason.
"""

import csv
import functools
import html
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from anogan_guide import bookpages

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
SKIPPED_PAGES = {"genindex.html", "search.html", "py-modindex.html"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def book() -> Path:
    where = os.environ.get("ANOGAN_BOOK_HTML")
    if not where:
        pytest.skip("ANOGAN_BOOK_HTML not set: make test builds the book (make book "
                    "BOOK_NOTEBOOKS=runs/ci/notebooks) and then runs these checks on it")
    path = Path(where)
    if not path.is_absolute():
        path = REPO / path
    if not (path / "index.html").is_file():
        pytest.fail(f"ANOGAN_BOOK_HTML={where}: no index.html there; build the book first")
    return path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(book):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                functools.partial(_QuietHandler, directory=str(book)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _chapters(book: Path) -> list[str]:
    """Every page of the book's navigation (index's sidebar lists the whole toctree)."""
    text = (book / "index.html").read_text()
    nav = text[text.find("bd-docs-nav"):]
    links = re.findall(r'<a class="reference internal" href="([^"#]+\.html)"', nav)
    return ["index.html", *dict.fromkeys(links)]


# Runs in the page: wait for MathJax and the widget manager, then report what a reader sees.
_INSPECT = """async () => {
  if (window.MathJax && MathJax.startup) { await MathJax.startup.promise; }
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  const deadline = Date.now() + 30000;
  while (views.length && Date.now() < deadline &&
         document.querySelectorAll('.widget-subarea > *, .jupyter-widgets.widget-container, '
                                   + '.jupyter-widgets.widget-inline-hbox').length === 0) {
    await new Promise(r => setTimeout(r, 200));
  }
  await new Promise(r => setTimeout(r, 1500));  // the widgets' outputs draw after the views
  const images = [...document.images];
  for (const img of images) { img.loading = 'eager'; }
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return {
    images: images.map(img => [img.currentSrc || img.src, img.naturalWidth]),
    math: document.querySelectorAll('span.math, div.math').length,
    typeset: document.querySelectorAll('span.math mjx-container, div.math mjx-container').length,
    widgetViews: views.length,
    widgetErrors: document.body.innerText.includes('Error displaying widget'),
    explorer: [...document.querySelectorAll('.ag-threshold-explorer')].map(box => ({
      confusion: (box.querySelector('.ag-confusion') || {}).innerText || '',
      slider: box.querySelectorAll('.ag-threshold .noUi-handle, .ag-threshold input').length,
      images: [...box.querySelectorAll('img')].map(i => i.naturalWidth)})),
    browser: [...document.querySelectorAll('.widget-interact')].map(box => ({
      options: [...box.querySelectorAll('select option')].map(o => o.textContent.replace(/\u00a0/g, ' ')),
      images: [...box.querySelectorAll('img')].map(i => i.naturalWidth)})),
  };
}"""


def test_every_chapter_renders_offline_in_chromium(book, server):
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium not installed (apt-get install -y chromium); browser test skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is not installed; browser test skipped")
    chapters = _chapters(book)
    notebooks = sorted(p.stem for p in (book / "notebooks").glob("*.html"))
    assert notebooks and all(f"notebooks/{n}.html" in chapters for n in notebooks), chapters
    assert any(c.startswith("results/") for c in chapters), chapters
    elsewhere, missing, failed, seen = [], [], [], {}

    def route(r):
        if urlparse(r.request.url).hostname == "127.0.0.1" or r.request.url.startswith("data:"):
            r.continue_()
        else:  # never leaves the machine: recorded and refused
            elsewhere.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", route)
            page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
            page.on("requestfailed", lambda r: failed.append((r.url, r.failure)))
            page.on("pageerror", lambda e: failed.append(("javascript", str(e))))
            for chapter in chapters:
                page.goto(server + chapter, wait_until="networkidle", timeout=60_000)
                seen[chapter] = page.evaluate(_INSPECT)
        finally:
            browser.close()

    assert not elsewhere, f"requests to other hosts: {sorted(set(elsewhere))[:10]}"
    assert not missing, f"missing files: {sorted(set(missing))[:10]}"
    assert not [f for f in failed if f[0] not in elsewhere], failed[:10]
    for chapter, found in seen.items():
        bad = [src for src, width in found["images"] if width == 0]
        assert not bad, f"{chapter}: images that did not decode: {bad[:5]}"
        assert found["typeset"] == found["math"], f"{chapter}: {found['math']} formulas, " \
            f"{found['typeset']} typeset by MathJax"
        assert not found["widgetErrors"], f"{chapter}: a widget failed to display"
    # the chapters carry figures and formulas at all (the checks above are not vacuous)
    assert sum(len(f["images"]) for f in seen.values()) >= 20
    assert sum(f["math"] for f in seen.values()) >= 5
    results = next(v for k, v in seen.items() if k.endswith("07_results.html"))
    assert results["widgetViews"] and results["explorer"], "07_results: no threshold explorer"
    explorer = results["explorer"][0]
    assert re.search(r"TN \d+.*FP \d+.*FN \d+.*TP \d+", explorer["confusion"], re.S), explorer
    assert explorer["slider"] >= 1 and all(w > 0 for w in explorer["images"]), explorer
    prep = next(v for k, v in seen.items() if k.endswith("00_data_prep.html"))
    browsers = [b for b in prep["browser"] if "train (normal)" in b["options"]]
    assert browsers, f"00_data_prep: no class browser rendered: {prep['browser']}"
    assert browsers[0]["images"] and all(w > 0 for w in browsers[0]["images"]), browsers[0]


def _html_tables(text: str) -> list[list[list[str]]]:
    """Every <table> of a page as rows of cell texts (tags stripped)."""
    tables = []
    for table in re.findall(r"<table.*?</table>", text, re.S):
        rows = []
        for row in re.findall(r"<tr.*?</tr>", table, re.S):
            cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
            rows.append([html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells])
        tables.append(rows)
    return tables


@pytest.mark.parametrize("page", bookpages.PAGES, ids=lambda p: p.slug)
def test_results_page_table_is_its_csv(book, page):
    """Each cell of the built page's table is the mean over seeds of the CSV's test AUROC
    (computed here from the CSV directly), its development AUROC in brackets, and, for a class
    with fewer seeds than the column's fullest (a sweep still running), "(k of n seeds)"."""
    built = (book / "results" / f"{page.slug}.html").read_text()
    table = _html_tables(built)[0]
    head, body = table[0], table[1:]
    with (REPO / page.main.csv).open() as f:
        rows = list(csv.DictReader(f))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    classes = list(dict.fromkeys(r["class"] for r in rows))
    for k, method in enumerate(methods):
        column = head.index(page.main.prefix + bookpages.label(method.replace(
            page.main.strip, "") if page.main.strip else method))
        assert column == k + 1
        most = max(sum(r["method"] == method and r["class"] == c for r in rows) for c in classes)
        for c in classes:
            mine = [r for r in rows if r["method"] == method and r["class"] == c]
            cell = next(r for r in body if r[0] == c)[column]
            if not mine:  # a method whose sweep has not reached this class yet
                assert cell == "–", (c, cell)
                continue
            test = np.mean([float(r["auroc"]) for r in mine])
            dev = np.mean([float(r["dev_auroc"]) for r in mine])
            seeds = f" ({len(mine)} of {most} seeds)" if len(mine) < most else ""
            assert cell.startswith(f"{test:.3f}") and cell.endswith(f"({dev:.3f}){seeds}"), (c, cell)
        means = [np.mean([float(r["auroc"]) for r in rows if r["method"] == method and
                          r["class"] == c] or [np.nan]) for c in classes]
        mean_row = next(r for r in body if r[0] == "mean")
        assert mean_row[column].startswith(f"{np.nanmean(means):.4f}")
    assert f'src="../_images/{page.slug}-auroc.png"' in built or \
        re.search(rf'src="[^"]*{re.escape(page.slug)}-auroc[^"]*\.png"', built)

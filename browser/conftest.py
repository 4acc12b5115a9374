"""The built book, served on 127.0.0.1 and opened page by page in Debian's headless Chromium.

(test_executed_notebooks.py reads the notebooks the build executed; it needs no browser.)

Every request that leaves 127.0.0.1 is blocked and recorded, so a page that passes renders
offline. Each page is opened once (``visit``) and what the tests check is read back as a
``PageVisit``; a full-page screenshot of each lands in ``_build/screenshots/<page>.png``.
Run with ``make test`` (after ``make book``) or ``.venv/bin/python -m pytest browser``.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 60_000  # per page load and per wait; a page renders in a few seconds


def toc_pages() -> list[str]:
    """Every document of _toc.yml (root, chapters, sections), as paths without suffix: 'book/walk'."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())

    def files(entry: dict):
        if "file" in entry:
            yield entry["file"]
        for key in ("parts", "chapters", "sections"):
            for child in entry.get(key, []):
                yield from files(child)

    return [toc["root"], *files(toc)]


PAGES = toc_pages()


def page_name(page: str) -> str:
    return Path(page).name


@dataclasses.dataclass
class PageVisit:
    """What one page did in the browser, once its maths and widgets had rendered."""

    remote_requests: list[str]        # URLs outside 127.0.0.1 the page asked for (all blocked)
    remote_references: list[str]      # elements whose src/href loads from another host
    failed_local: list[str]           # local resources answered with an HTTP error, or that failed
    js_errors: list[str]              # uncaught exceptions and console errors
    broken_images: list[str]          # <img> not complete or with naturalWidth 0 (sweep frames aside)
    math: dict                        # see MATH_JS
    widgets: dict                     # see WIDGETS_JS
    sweeps: list[dict]                # see SWEEPS_JS, one entry per div.sgdlab-sweep
    colab_links: list[str]            # every href that points at the Colab URL of _config.yml
    figures: list[list[dict]]         # see FIGURES_JS: per cell tagged 'figure', its output images
    frames: list[dict]                # see FIGURES_JS: every static-sweep frame
    weight: dict                      # see WEIGHT_JS: bytes of the page and of each resource it loaded
    overflowing: list[str]            # see OVERFLOW_JS: code or output blocks wider than the page


# The maths: Sphinx's math spans and divs, rendered to HTML by KaTeX when the book was built.
# A page has maths when it has one; none may be left as TeX, be a KaTeX error, or be cut off
# at the left of its column; and no page loads a maths script.
MATH_JS = """() => {
  const skip = 'pre, code, script, style, textarea, .katex, .highlight';
  const math = [...document.querySelectorAll('.math')];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let node; (node = walker.nextNode());) {
    if (node.parentElement.closest(skip)) continue;
    const m = node.textContent.match(/\\\\\\(|\\\\\\[|\\\\begin\\{|\\$\\$/);
    if (m) raw.push(node.textContent.trim().slice(0, 80));
  }
  const cut = math.filter(e => { const k = e.querySelector('.katex');
    return k && k.getBoundingClientRect().left < e.getBoundingClientRect().left - 1; });
  return {
    elements: math.length,
    unrendered: math.filter(e => !e.querySelector('.katex')).map(e => e.textContent.slice(0, 80)),
    errors: [...document.querySelectorAll('.katex-error')].map(e => e.textContent.slice(0, 80)),
    cut: cut.map(e => e.textContent.slice(0, 80)),
    scripts: [...document.querySelectorAll('script[src]')].map(s => s.src).filter(s => /mathjax|katex/i.test(s)),
    raw,
  };
}"""

# myst-nb writes each widget view as a <script type=...widget-view+json>, and loads a widget
# manager (nb_ipywidgets_js) on a page whose notebook saved widget state.
WIDGETS_JS = """() => ({
  views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
  controls: document.querySelectorAll('.jupyter-widgets, .widget-subarea, input.widget-slider').length,
  managers: [...document.querySelectorAll('script[src]')].map(s => s.src).filter(s => /embed|html-manager|require/.test(s)),
  state: document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]').length,
})"""

# What a reader sees of each figure: the image in the output of every cell tagged 'figure'
# (myst-nb writes tags as classes: div.cell.tag_figure) and every static-sweep frame; for each
# its size in the PNG (natural), its width on the page (shown; a hidden frame's box instead),
# and how many colours a sample of its pixels holds (1: a blank image).
FIGURES_JS = """async () => {
  const inspect = async img => {
    if (!(img.complete && img.naturalWidth > 0)) { try { await img.decode(); } catch (e) {} }
    const box = img.closest('.sgdlab-sweep');
    const info = {src: (img.getAttribute('src') || '').slice(0, 60), natural: img.naturalWidth,
                  shown: box ? box.clientWidth : img.getBoundingClientRect().width, colours: 0};
    if (!img.naturalWidth) return info;
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const pixels = new Uint32Array(context.getImageData(0, 0, canvas.width, canvas.height).data.buffer);
    const seen = new Set();
    for (let i = 0; i < pixels.length && seen.size < 3; i += 7) seen.add(pixels[i]);
    info.colours = seen.size;
    return info;
  };
  const figures = [];
  for (const cell of document.querySelectorAll('div.cell.tag_figure'))
    figures.push(await Promise.all([...cell.querySelectorAll('.cell_output img')].map(inspect)));
  const frames = await Promise.all([...document.querySelectorAll('img.sgdlab-sweep-frame')].map(inspect));
  return {figures, frames};
}"""

# Code and printed output that do not fit the page's width (the reader would scroll sideways).
OVERFLOW_JS = """() => [...document.querySelectorAll('div.cell pre')]
  .filter(pre => pre.offsetParent !== null && pre.scrollWidth > pre.clientWidth + 2)
  .map(pre => `${pre.closest('.cell_output') ? 'output' : 'code'} ${pre.scrollWidth}>${pre.clientWidth} px: `
              + pre.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a, '').slice(0, 60))"""

# Bytes the page cost: the document (its embedded images included) and every resource it
# loaded, decoded (uncompressed), as the browser's resource timing reports them.
WEIGHT_JS = """() => ({
  document: performance.getEntriesByType('navigation')[0].decodedBodySize,
  resources: performance.getEntriesByType('resource').map(r => ({url: r.name, bytes: r.decodedBodySize})),
})"""

# Moves each sweep's slider through all its positions, as a reader would (value + input event),
# and records which frames are visible at each position and whether the visible one loaded.
SWEEPS_JS = """async () => {
  const settle = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const loaded = img => img.complete && img.naturalWidth > 0;
  const waitLoaded = img => loaded(img) ? Promise.resolve() : Promise.race([
    new Promise(r => { img.addEventListener('load', r, {once: true}); img.addEventListener('error', r, {once: true}); }),
    new Promise(r => setTimeout(r, 10000)),
  ]);
  const report = [];
  for (const sweep of document.querySelectorAll('div.sgdlab-sweep')) {
    const sliders = sweep.querySelectorAll('input[type="range"].sgdlab-sweep-slider');
    const frames = [...sweep.querySelectorAll('img.sgdlab-sweep-frame')];
    const visible = () => frames.map((f, i) => [f, i]).filter(([f]) => !f.hidden && f.offsetParent !== null);
    const entry = {sliders: sliders.length, frames: frames.length, positions: []};
    report.push(entry);
    if (sliders.length !== 1) continue;
    const slider = sliders[0];
    const min = Number(slider.min || 0), max = Number(slider.max || 100);
    const step = Number(slider.step) > 0 ? Number(slider.step) : 1;
    const values = [slider.value];
    for (let k = 0; min + k * step <= max && k < 500; k++) values.push(String(min + k * step));
    values.push(values[0]);  // back to where the reader found it
    for (const value of values) {
      slider.value = value;
      slider.dispatchEvent(new Event('input', {bubbles: true}));
      await settle();
      const shown = visible();
      for (const [f] of shown) await waitLoaded(f);
      entry.positions.push({
        value: slider.value,
        visible: shown.map(([, i]) => i),
        src: shown.map(([f]) => f.getAttribute('src')),
        loaded: shown.map(([f]) => loaded(f)),
      });
    }
  }
  return report;
}"""

IMAGES_JS = """() => [...document.images]
  .filter(img => !img.classList.contains('sgdlab-sweep-frame'))
  .filter(img => !(img.complete && img.naturalWidth > 0))
  .map(img => (img.getAttribute('src') || '').slice(0, 120))"""

# Elements that make the browser fetch something (link rel=next/prev/search only navigate).
REFERENCES_JS = """() => {
  const fetching = /(^|\\s)(stylesheet|icon|preload|prefetch|preconnect|dns-prefetch|modulepreload|manifest)(\\s|$)/i;
  const urls = [];
  for (const el of document.querySelectorAll('script[src], img[src], iframe[src], source[src], video[src], audio[src], embed[src]'))
    urls.push(el.src);
  for (const el of document.querySelectorAll('link[href]'))
    if (fetching.test(el.rel)) urls.push(el.href);
  const remote = u => { const url = new URL(u, location.href);  // data: and blob: stay in the page
    return !['data:', 'blob:'].includes(url.protocol) && url.hostname !== location.hostname; };
  return urls.filter(remote).map(u => u.slice(0, 120));
}"""


def pytest_generate_tests(metafunc):
    """A test that takes ``page`` runs once per page of the TOC, named after it."""
    if "page" in metafunc.fixturenames:
        metafunc.parametrize("page", PAGES, ids=page_name)


@pytest.fixture(scope="session")
def all_pages() -> list[str]:
    return PAGES


@pytest.fixture(scope="session")
def book_config() -> dict:
    """_config.yml: the repository and the Colab URL are named there once."""
    return yaml.safe_load((ROOT / "_config.yml").read_text())


@pytest.fixture(scope="session")
def book_url():
    """The built book, served by a thread on a free port of 127.0.0.1."""
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no built book in {HTML}: run `make book` first", pytrace=False)
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium (never a browser downloaded by Playwright), headless."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser test runs Debian's Chromium. Install it with "
            "`apt-get install -y --no-install-recommends chromium` (.ci/run does so).",
            pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def visit(chromium, book_url, book_config):
    """``visit('book/walk')`` opens the page once per session and returns its ``PageVisit``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    colab_url = book_config["launch_buttons"]["colab_url"]

    @functools.cache
    def open_page(page: str) -> PageVisit:
        remote, failed, errors = [], [], []

        def route(route):
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                remote.append(route.request.url)
                route.abort("blockedbyclient")

        tab = context.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        tab.route("**/*", route)
        tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
        tab.on("console", lambda msg: errors.append(f"console: {msg.text} ({msg.location.get('url')})")
               if msg.type == "error" else None)
        tab.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        tab.on("requestfailed", lambda r: failed.append(f"{r.failure} {r.url}")
               if urlsplit(r.url).hostname == "127.0.0.1" else None)
        try:
            tab.goto(book_url + page + ".html", wait_until="load")
            tab.wait_for_load_state("networkidle")
            tab.wait_for_load_state("networkidle")
            images = tab.evaluate(FIGURES_JS)
            visit = PageVisit(
                remote_requests=remote,
                remote_references=tab.evaluate(REFERENCES_JS),
                failed_local=failed,
                js_errors=errors,
                broken_images=tab.evaluate(IMAGES_JS),
                math=tab.evaluate(MATH_JS),
                widgets=tab.evaluate(WIDGETS_JS),
                sweeps=[],
                colab_links=sorted({a for a in tab.eval_on_selector_all(
                    "a[href]", "links => links.map(a => a.href)") if a.startswith(colab_url)}),
                figures=images["figures"],
                frames=images["frames"],
                weight=tab.evaluate(WEIGHT_JS),
                overflowing=tab.evaluate(OVERFLOW_JS),
            )
            tab.screenshot(path=SCREENSHOTS / f"{page_name(page)}.png", full_page=True)
            visit.sweeps = tab.evaluate(SWEEPS_JS)  # after the screenshot: it moves the sliders
            return visit
        finally:
            tab.close()

    yield open_page
    context.close()

"""Every page of the built book renders offline in Chromium: no remote request, no JavaScript
error, images loaded, maths typeset, widgets rendered from their saved state, static sweeps
that move, and a Colab button that opens this page's notebook. Each test that takes ``page``
runs once per page of _toc.yml (conftest.py)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def colab_notebook_url(config: dict, page: str) -> str:
    """The Colab URL of ``page``'s notebook, from the repository and launch buttons of _config.yml."""
    repository = config["repository"]["url"].removeprefix("https://github.com/").strip("/")
    return (f"{config['launch_buttons']['colab_url'].rstrip('/')}/github/{repository}"
            f"/blob/{config['repository']['branch']}/{page}.ipynb")


def listing(what: str, items: list[str]) -> str:
    return f"{len(items)} {what}:\n  " + "\n  ".join(items)


def test_page_loads_nothing_from_another_host(visit, page):
    result = visit(page)
    assert not result.remote_requests, listing("blocked requests to other hosts", result.remote_requests)
    assert not result.remote_references, listing("elements that load from other hosts",
                                                 result.remote_references)


def test_page_loads_every_local_resource(visit, page):
    failed = visit(page).failed_local
    assert not failed, listing("local resources that failed", failed)


def test_page_runs_without_javascript_errors(visit, page):
    errors = visit(page).js_errors
    assert not errors, listing("JavaScript errors", errors)


def test_every_image_loads(visit, page):
    broken = visit(page).broken_images
    assert not broken, listing("images that did not load", broken)


def test_maths_is_typeset_by_mathjax(visit, page):
    math = visit(page).math
    if math["elements"]:
        assert math["containers"] >= math["elements"]
    assert math["untypeset"] == []
    assert math["errors"] == [], "MathJax could not typeset these"
    assert math["raw"] == [], "TeX delimiters left in the text"


def test_widgets_render_from_their_saved_state(visit, page):
    widgets = visit(page).widgets
    if widgets["views"]:
        assert widgets["state"] == 1, "a page with widget views carries their saved state once"
    assert widgets["rendered"] == widgets["views"]


def test_static_sweeps_show_one_loaded_frame_per_slider_position(visit, page):
    for number, sweep in enumerate(visit(page).sweeps):
        where = f"sweep {number} of {page}"
        assert sweep["sliders"] == 1, f"{where}: one slider"
        assert sweep["frames"] >= 2, f"{where}: several frames"
        positions = sweep["positions"]
        for position in positions:
            assert len(position["visible"]) == 1, f"{where} at {position['value']}: one frame visible"
            assert position["loaded"] == [True], f"{where} at {position['value']}: the frame loads"
        first = positions[0]
        assert any(p["visible"] != first["visible"] and p["src"] != first["src"] for p in positions), \
            f"{where}: moving the slider shows another frame"
        shown = {i for p in positions for i in p["visible"]}
        assert shown == set(range(sweep["frames"])), f"{where}: every frame is reachable"


def test_the_book_has_a_static_sweep(visit, all_pages):
    assert any(visit(page).sweeps for page in all_pages), \
        "no div.sgdlab-sweep on any page: the book's static sweeps are missing"


def test_colab_button_opens_this_pages_notebook(visit, page, book_config):
    links = visit(page).colab_links
    if (ROOT / f"{page}.ipynb").is_file():
        assert links == [colab_notebook_url(book_config, page)]
    else:
        assert links == [], "a page that is not a notebook has nothing to open on Colab"


def test_markdown_tables_printed_by_notebooks_are_tables():
    """The census and the scoreboard are Markdown outputs: they must be parsed as tables, not left as text."""
    import re
    for page, header in (("book/scoreboard", "the claim"), ("book/walk", "barriers crossed")):
        html = (ROOT / "_build" / "html" / f"{page}.html").read_text()
        tables = re.findall(r"<table.*?</table>", html, re.S)
        assert any(header in table for table in tables), f"{page}: no <table> with the column {header!r}"

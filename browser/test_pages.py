"""Every page of the built book renders offline in Chromium: no remote request, no JavaScript
error, images loaded, maths rendered at build time, every declared figure shown sharp and readable, no dead
widget, static sweeps that move, a light page, and a Colab button that opens this page's
notebook. Each test that takes ``page`` runs once per page of _toc.yml (conftest.py)."""

import json
from pathlib import Path

from sgdlab.plots import BOOK_STYLE

ROOT = Path(__file__).resolve().parents[1]
MIN_FIGURE_WIDTH = 600      # px in the PNG: sharp at the page's width
MIN_LABEL_PX = 10          # a label of the book's font size, as the page shows it
MAX_PAGE_BYTES = 2_000_000  # uncompressed: the document, its figures and sweep frames, the theme, fonts


def declared_figures(page: str) -> int:
    """How many cells of ``page``'s notebook are tagged 'figure' (0 for a page that is no notebook)."""
    path = ROOT / f"{page}.ipynb"
    if not path.is_file():
        return 0
    return sum("figure" in c.get("metadata", {}).get("tags", []) for c in json.loads(path.read_text())["cells"])


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


def test_maths_is_rendered_when_the_book_is_built(visit, page):
    math = visit(page).math
    assert math["unrendered"] == [], "maths left for the browser to typeset"
    assert math["errors"] == [], "KaTeX could not render these"
    assert math["cut"] == [], "equations cut off at the left of the column"
    assert math["raw"] == [], "TeX delimiters left in the text"
    assert math["scripts"] == [], "a page loads a maths script: the maths is rendered at build time"



def test_every_declared_figure_is_shown_in_its_cell_output(visit, page):
    figures = visit(page).figures
    assert len(figures) == declared_figures(page), \
        f"{page}: {declared_figures(page)} cells tagged 'figure' in the notebook, {len(figures)} on the page"
    empty = [i for i, images in enumerate(figures) if not images]
    assert not empty, f"{page}: figure cells {empty} (counted on the page) show no image"


def test_figures_and_sweep_frames_are_sharp_readable_and_not_blank(visit, page):
    result = visit(page)
    images = [(f"figure {i}", image) for i, cell in enumerate(result.figures) for image in cell]
    images += [(f"sweep frame {i}", frame) for i, frame in enumerate(result.frames)]
    for where, image in images:
        assert image["natural"] >= MIN_FIGURE_WIDTH, f"{page}, {where}: {image['natural']} px wide"
        assert image["colours"] > 1, f"{page}, {where}: blank (one colour)"
        scale = image["shown"] / image["natural"]  # the PNG is drawn at BOOK_STYLE's dpi
        label_px = BOOK_STYLE["font.size"] / 72 * BOOK_STYLE["figure.dpi"] * scale
        assert label_px >= MIN_LABEL_PX, (
            f"{page}, {where}: shown at {scale:.0%} of its size, so its labels are {label_px:.1f} px: "
            "draw it narrower")


def test_code_and_output_fit_the_page_width(visit, page):
    overflowing = visit(page).overflowing
    assert not overflowing, listing("blocks that scroll sideways", overflowing)


def test_no_print_button_that_only_prints(page):
    html = (ROOT / "_build" / "html" / f"{page}.html").read_text()
    assert "window.print()" not in html and "download-pdf-button" not in html


def test_no_dead_controls_and_no_widget_manager(visit, page):
    widgets = visit(page).widgets
    assert widgets == {"views": 0, "controls": 0, "managers": [], "state": 0}, \
        f"{page}: a widget on a page that cannot run it (its cell should be tagged remove-output), its manager or its state"


def test_page_weighs_under_two_megabytes(visit, page):
    weight = visit(page).weight
    total = weight["document"] + sum(r["bytes"] for r in weight["resources"])
    heaviest = sorted(weight["resources"], key=lambda r: -r["bytes"])[:5]
    assert total < MAX_PAGE_BYTES, (
        f"{page}: {total / 1e6:.2f} MB uncompressed (document {weight['document'] / 1e6:.2f} MB); heaviest: "
        + ", ".join(f"{r['url'].rsplit('/', 1)[-1][:40]} {r['bytes'] / 1e3:.0f} kB" for r in heaviest))


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


def test_every_chapter_links_the_api_reference_and_every_link_lands(all_pages):
    """Chapters link the API reference where they first use a function, by the book's public URL (so
    the link works in Jupyter and on Colab too); each link's anchor exists in the built API page it names."""
    import re
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from setup_cell import project

    link = re.compile(re.escape(project()["pages"]) + r"book/(api_\w+)\.html#([\w.-]+)")
    built = {}
    for page in all_pages:
        path = ROOT / f"{page}.ipynb"
        if not path.is_file():
            continue
        anchors = link.findall(path.read_text())
        assert anchors, f"{page}: no link to the API reference"
        for api_page, anchor in anchors:
            if api_page not in built:
                built[api_page] = (ROOT / "_build" / "html" / "book" / f"{api_page}.html").read_text()
            assert f'id="{anchor}"' in built[api_page], f"{page}: links to {anchor}, which {api_page}.html lacks"

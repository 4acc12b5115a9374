"""The notebooks as files: the same Colab set-up everywhere, no stored outputs, all in the table of contents,
a static sweep for every widget, every figure declared, code that fits the page.

Executing them is nbval's job (`make test` runs `pytest --nbval-lax book`); what the executed
notebooks and their pages show is checked after the build (browser/).
"""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
DRAWS = re.compile(r"plt\.|plot_\w+\(|\.plot\(|imshow|subplots|\.hist\(|\.loglog\(|\.contour|\.scatter\(")
MAX_LINE = 80  # characters: a code line wider than the page's text column scrolls sideways


def cells(path):
    return json.loads(path.read_text())["cells"]


def first_code_cell(path):
    return "".join(next(c for c in cells(path) if c["cell_type"] == "code")["source"])


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_the_shared_colab_setup(path):
    setup = first_code_cell(path)
    assert setup == first_code_cell(NOTEBOOKS[0])
    assert f"git+{CONFIG['repository']['url']}" in setup
    assert 'os.environ.setdefault("SGDLAB_PRESET", "gpu")' in setup and "sgdlab.setup_chapter()" in setup
    assert cells(path)[0]["cell_type"] == "markdown" and "".join(cells(path)[0]["source"]).startswith("# ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_asks_colab_for_a_gpu(path):
    notebook = json.loads(path.read_text())
    assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")
    assert notebook["metadata"]["accelerator"] == "GPU"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_the_table_of_contents(path):
    assert f"file: book/{path.stem}" in (ROOT / "_toc.yml").read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_widget_has_a_static_sweep_for_the_static_page(path):
    sources = ["".join(c["source"]) for c in cells(path) if c["cell_type"] == "code"]
    widgets = sum(s.count("widgets.interact") for s in sources)
    sweeps = sum(s.count("static_sweep(") for s in sources)
    assert sweeps >= widgets, f"{path.name}: {widgets} widget(s) but {sweeps} static sweep(s)"


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_that_draws_declares_its_figure_and_every_widget_is_hidden_on_the_page(path):
    """A drawing cell is tagged 'figure' (the build's tests then require its image); a widget's cell
    is tagged 'remove-output' (its controls are dead on the static page, which shows its sweep)."""
    for i, cell in enumerate(cells(path)):
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "remove-cell" in tags(cell):
            continue
        if "widgets.interact" in source:
            assert "remove-output" in tags(cell) and "figure" not in tags(cell), f"{path.name} cell {i}"
        elif DRAWS.search(source) and "static_sweep(" not in source:
            assert "figure" in tags(cell), f"{path.name} cell {i} draws but is not tagged 'figure'"
        else:
            assert "figure" not in tags(cell), f"{path.name} cell {i} is tagged 'figure' but draws nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_a_reader_sees_fits_the_page(path):
    wide = [f"cell {i}: {line[:50]}... ({len(line)})"
            for i, cell in enumerate(cells(path))
            if cell["cell_type"] == "code" and "remove-cell" not in tags(cell)
            for line in "".join(cell["source"]).splitlines() if len(line) > MAX_LINE]
    assert not wide, f"{path.name}: {len(wide)} code lines over {MAX_LINE} characters:\n  " + "\n  ".join(wide)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_figures_are_no_wider_than_the_book_allows(path):
    from sgdlab.plots import MAX_FIGURE_WIDTH

    widths = [float(w) for c in cells(path) for w in re.findall(r"figsize=\(([\d.]+),", "".join(c["source"]))]
    assert all(w <= MAX_FIGURE_WIDTH for w in widths), f"{path.name}: figure widths {widths} (inches)"

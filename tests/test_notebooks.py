"""The notebooks as files: the same Colab set-up everywhere, no stored outputs, all in the table of contents,
a static sweep for every widget, every figure declared, code that fits the page.

Executing them is nbval's job (`make test` runs `pytest --nbval-lax book`); what the executed
notebooks and their pages show is checked after the build (browser/).
"""

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import sgdlab

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from setup_cell import project, setup_cell  # noqa: E402

NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
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
    assert setup == setup_cell(project()), f"{path.name}: run `python tools/setup_cell.py` to write the set-up cell"
    assert 'os.environ.setdefault("SGDLAB_PRESET", "gpu")' in setup and "sgdlab.setup_chapter()" in setup
    assert cells(path)[0]["cell_type"] == "markdown" and "".join(cells(path)[0]["source"]).startswith("# ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_installs_this_version_of_the_package(path):
    setup = first_code_cell(path)
    assert re.findall(r'"sgdlab==([^"]+)"', setup) == [sgdlab.__version__]
    assert re.findall(r'"git\+(\S+)@v([^"]+)"', setup) == [(project()["repository"], sgdlab.__version__)]


def run_setup_cell_on_colab(monkeypatch, pip_exit_codes):
    """Run the set-up cell in IPython as on Colab, with pip answering ``pip_exit_codes`` in turn.

    Returns the IPython result, what it printed, and the requirements pip was asked for."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from traitlets.config import Config

    asked, codes = [], iter(pip_exit_codes)

    def pip(args, **kwargs):
        assert args[:4] == [sys.executable, "-m", "pip", "install"]
        asked.append(args[-1])
        return types.SimpleNamespace(returncode=next(codes))

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.setenv("SGDLAB_PRESET", "quick")
    config = Config()
    config.HistoryManager.enabled = False  # no history database in the home directory
    shell = InteractiveShell.instance(config=config)
    with capture_output() as captured:
        result = shell.run_cell(first_code_cell(NOTEBOOKS[0]))
    return result, captured.stdout + captured.stderr, asked


@pytest.mark.filterwarnings("ignore:To exit")
@pytest.mark.parametrize("pip_exit_codes, installs", [((0,), 1), ((1, 0), 2)], ids=["pypi", "source-fallback"])
def test_setup_cell_installs_the_release_or_falls_back_to_its_source(monkeypatch, pip_exit_codes, installs):
    result, printed, asked = run_setup_cell_on_colab(monkeypatch, pip_exit_codes)
    assert result.success, printed
    assert asked == [f"sgdlab=={sgdlab.__version__}", f"git+{project()['repository']}@v{sgdlab.__version__}"][:installs]
    assert "sgdlab preset 'quick'" in printed


@pytest.mark.filterwarnings("ignore:To exit")
def test_setup_cell_that_cannot_install_says_what_to_do_without_a_traceback(monkeypatch):
    result, printed, asked = run_setup_cell_on_colab(monkeypatch, (1, 1))
    assert len(asked) == 2 and not result.success  # Jupyter stops "run all" here
    assert f"Could not install sgdlab=={sgdlab.__version__}" in printed and "run this cell again" in printed
    assert "Traceback" not in printed and "File " not in printed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_asks_colab_for_a_gpu(path):
    notebook = json.loads(path.read_text())
    assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")
    assert notebook["metadata"]["accelerator"] == "GPU"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_has_its_own_id(path):
    """nbformat 4.5 cells carry ids; a cell without one gets a new id whenever the notebook is
    executed, so the executed copy no longer matches its source (the student edition refuses it)."""
    cells = json.loads(path.read_text())["cells"]
    ids = [c.get("id") for c in cells]
    assert None not in ids, [i for i, c in enumerate(cells) if "id" not in c]
    assert len(set(ids)) == len(ids)


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

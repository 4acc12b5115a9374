"""The notebooks as files: the same Colab set-up everywhere, no stored outputs, all in the table of contents,
a static sweep for every widget.

Executing them is nbval's job (`make test` runs `pytest --nbval-lax book`)."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


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
    assert 'os.environ.setdefault("SGDLAB_PRESET", "gpu")' in setup and "sgdlab.describe(" in setup
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

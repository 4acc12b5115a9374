"""What the build executed: every declared figure is in its notebook, sharp, and nothing stray is printed.

``make book`` executes every chapter into ``_build/jupyter_execute/book/*.ipynb``; the pages
are rendered from those. A chapter declares its figures by tagging each cell that draws
``figure`` (tests/test_notebooks.py checks that no drawing cell goes undeclared). Here each
declared cell must hold an image, drawn at the book's resolution, and no output a reader
meets may be a warning, a traceback, a path of the build machine or a frozen progress bar.
Run after ``make book``, with the browser tests (``make test`` does).
"""

import base64
import json
import re
import struct
from pathlib import Path

import pytest

from sgdlab.plots import BOOK_STYLE

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "jupyter_execute" / "book"
SOURCES = sorted((ROOT / "book").glob("*.ipynb"))
IMAGE_TYPES = ("image/png", "image/svg+xml")
PALETTE = 3  # a PNG's colour type (byte 25, in its header chunk) when it holds a palette

# What a reader must never find in an output (text of streams, errors and text/plain results)
STRAY = {
    "a warning": re.compile(r"\b\w*Warning\b"),
    "a traceback": re.compile(r"Traceback \(most recent call last\)|^\w+Error: ", re.M),
    "a path of the build machine": re.compile(r"/tmp/|ipykernel_\d+|/work/|/home/|site-packages"),
    "a progress bar": re.compile(r"\d+%\|| \d+/\d+ \[|\bit/s\]|step/s\]"),
}


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def executed(source: Path) -> list[dict]:
    path = EXECUTED / source.name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make book` first", pytrace=False)
    return json.loads(path.read_text())["cells"]


def png_dpi(png: bytes) -> float | None:
    """The resolution a PNG declares (its pHYs chunk, pixels per metre), in dots per inch."""
    at = png.find(b"pHYs")
    if at < 0:
        return None
    per_metre, _, unit = struct.unpack(">IIB", png[at + 4:at + 13])
    return per_metre * 0.0254 if unit == 1 else None


def shown(cell: dict) -> bool:
    """Whether the page shows this cell's outputs (tags the book's build honours)."""
    return not {"remove-cell", "remove-output"} & set(tags(cell))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_every_declared_figure_is_in_the_executed_notebook_at_book_resolution(source):
    declared = [i for i, c in enumerate(json.loads(source.read_text())["cells"]) if "figure" in tags(c)]
    cells = executed(source)
    for i in declared:
        images = [o["data"]["image/png"] for o in cells[i].get("outputs", [])
                  if any(t in o.get("data", {}) for t in IMAGE_TYPES) and "image/png" in o["data"]]
        assert images, f"{source.name} cell {i} is tagged 'figure' but left no image: the page shows none"
        for image in images:
            png = base64.b64decode(image)
            dpi = png_dpi(png)
            assert dpi is not None and abs(dpi - BOOK_STYLE["figure.dpi"]) < 1, \
                f"{source.name} cell {i}: a figure at {dpi} dpi; the book draws at {BOOK_STYLE['figure.dpi']}"
            assert png[25] == PALETTE, f"{source.name} cell {i}: not a palette PNG: not made by plots.figure_png"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_no_output_a_reader_sees_is_stray(source):
    found = []
    for i, cell in enumerate(executed(source)):
        if cell["cell_type"] != "code" or not shown(cell):
            continue
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                found.append(f"cell {i}: an error ({output.get('ename')})")
                continue
            if output["output_type"] == "stream" and output.get("name") == "stderr":
                found.append(f"cell {i}: text on stderr: {''.join(output['text'])[:160]!r}")
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                found.append(f"cell {i}: a widget, which the static page cannot run")
            text = "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
            for what, pattern in STRAY.items():
                match = pattern.search(text)
                if match:
                    found.append(f"cell {i}: {what}: ...{text[max(0, match.start() - 60):match.end() + 60]!r}...")
    assert not found, f"{source.name}:\n  " + "\n  ".join(found)


def test_the_stray_output_patterns_catch_what_they_are_for():
    caught = {
        "a warning": "/tmp/ipykernel_123/4.py:5: RuntimeWarning: overflow encountered",
        "a traceback": "Traceback (most recent call last):\n  File x\nValueError: bad",
        "a path of the build machine": "saved to /tmp/ipykernel_4242/123.py",
        "a progress bar": "training:   0%|          | 1/280 [00:00<?, ?step/s]",
    }
    for what, text in caught.items():
        assert STRAY[what].search(text), what
    clean = "lr 0.1: final training loss 0.316 nats, test accuracy 94.2% (medians over 3 seeds)"
    assert not any(p.search(clean) for p in STRAY.values())


def test_the_dpi_reader_reads_what_matplotlib_writes(tmp_path):
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=123)
    plt.close(fig)
    assert abs(png_dpi(buffer.getvalue()) - 123) < 0.1

"""Solutions folded in every viewer: a ``<details>`` block in the notebook, the exercise's
solution directive in the book.

A chapter keeps each solution in its own markdown cell, tagged ``solution``, right after
its exercise::

    <details class="solution">
    <summary>Solution</summary>

    The text of the solution, in Markdown.

    </details>

Jupyter and Colab show it folded. As a Sphinx extension (``local_extensions`` in
_config.yml), this module turns each such cell, when the book reads a notebook, into
sphinx-exercise's ``:::{solution} LABEL`` directive (``:class: dropdown``), LABEL being
the ``:label:`` of the last exercise before it: the book's rendering, and the student
edition's ``hide_solutions``, are those of the directive.

Usage: python tools/fold_solutions.py BOOK/*.ipynb   folds the ``:::{solution}`` blocks an
author wrote into a notebook's markdown cells (the reverse of what the book does).
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path

TAG = "solution"
OPEN = '<details class="solution">\n<summary>Solution</summary>\n\n'
CLOSE = "\n\n</details>"
DIRECTIVE = re.compile(r"^(:{3,})\{solution\}[ \t]*(\S+)[ \t]*\n((?::[\w-]+:[^\n]*\n)*)\n?(.*?)\n?^\1[ \t]*$\n?",
                       re.S | re.M)
LABEL = re.compile(r"\{exercise\}[^\n]*\n(?::[\w-]+:[^\n]*\n)*?:label:[ \t]*(\S+)")


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def folded(body: str) -> str:
    """The markdown of a solution cell holding ``body``."""
    return OPEN + body.strip("\n") + CLOSE


def body_of(cell_source: str) -> str:
    """The solution's text in a solution cell (what :func:`folded` wrapped)."""
    if not (cell_source.startswith(OPEN) and cell_source.endswith(CLOSE)):
        raise ValueError(f"a cell tagged {TAG!r} must be {OPEN!r} ... {CLOSE!r}, got {cell_source[:60]!r}...")
    return cell_source[len(OPEN):-len(CLOSE)]


def directive(label: str, body: str) -> str:
    return f":::{{solution}} {label}\n:class: dropdown\n\n{body.strip()}\n:::\n"


def as_directives(notebook: dict) -> dict:
    """``notebook`` with every solution cell's ``<details>`` turned into the solution directive
    of the exercise before it (in place; returned)."""
    label = None
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        if TAG in cell.get("metadata", {}).get("tags", []):
            if label is None:
                raise ValueError(f"cell {i} is a solution with no exercise (:label:) before it")
            cell["source"] = _lines(directive(label, body_of(text)))
        labels = LABEL.findall(text)
        if labels:
            label = labels[-1]
    return notebook


def fold(notebook: dict) -> dict:
    """``notebook`` with each ``:::{solution}`` block of a markdown cell moved into a folded
    solution cell right after it (in place; returned)."""
    cells = []
    for cell in notebook["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] != "markdown" or TAG in cell.get("metadata", {}).get("tags", []):
            cells.append(cell)
            continue
        bodies = [m.group(4) for m in DIRECTIVE.finditer(text)]
        cell["source"] = _lines(DIRECTIVE.sub("", text).rstrip("\n"))
        cells.append(cell)
        for body in bodies:
            cells.append({"cell_type": "markdown", "id": f"solution-{uuid.uuid4().hex[:8]}",
                          "metadata": {"tags": [TAG]}, "source": _lines(folded(body))})
    notebook["cells"] = cells
    return notebook


def _read_notebook_as_book(app, docname, source):
    """Sphinx ``source-read``: a notebook's solution cells become directives."""
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    notebook = json.loads(source[0])
    if any(TAG in c.get("metadata", {}).get("tags", []) for c in notebook["cells"]):
        source[0] = json.dumps(as_directives(notebook), indent=1, ensure_ascii=False) + "\n"


def setup(app):
    app.connect("source-read", _read_notebook_as_book)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    for name in sys.argv[1:]:
        path = Path(name)
        notebook = fold(json.loads(path.read_text()))
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")

"""The student edition: the book and its notebooks with every answer taken out.

Usage: python tools/student_edition.py [--check] [OUT]   (``make student`` calls it; OUT
defaults to _build/student)

What a student must never meet, in the pages, their downloads or the notebooks:

* a solution: a markdown cell tagged ``solution`` (a folded ``<details>`` block, see
  tools/fold_solutions.py), or a ``:::{solution}`` block of a page;
* a cell that computes an answer, tagged ``answer``, with its output;
* the hidden checks (cells tagged ``remove-cell``), whose asserts state the answers.

Writes, under OUT:

* ``src/``: a copy of the book to build, without those. Its notebooks are the ones ``make
  book`` executed (``_build/jupyter_execute/book``), so the student book is built without
  running anything again (``execute_notebooks: off``); a notebook whose code changed since
  that build is refused ("run `make book` first"). ``--check`` only says whether they are
  current (exit status 0) or not (1).
* ``notebooks/``: the chapters as a class opens them in Jupyter or on Colab: stripped, no
  outputs, exercises as plain Markdown; ``student-notebooks.zip`` holds them, and the student
  book's intro links it.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from student_config import student_config  # noqa: E402

EXECUTED = ROOT / "_build" / "jupyter_execute" / "book"
HIDDEN = {"answer", "solution", "remove-cell"}   # tags of the cells a student never gets
TEACHER_ONLY = ("book/teaching", "book/build_report")   # pages left out of the student book
ZIP_NAME = "student-notebooks.zip"

SOLUTION_BLOCK = re.compile(r"^(:{3,})\{solution\}.*?^\1[ \t]*$\n?", re.S | re.M)
EXERCISE_BLOCK = re.compile(r"^(:{3,})\{exercise\}[^\n]*\n((?::[\w-]+:[^\n]*\n)*)\n?(.*?)^\1[ \t]*$", re.S | re.M)
ROLE = re.compile(r"\{(term|doc|ref|numref|eq)\}`([^`<]*?)\s*(?:<[^`>]*>)?`")
DOC_LINK = re.compile(r"\{doc\}`(?:([^`<]*?)\s*<([^`>]*)>|([^`<>]*))`")
CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]*)`")


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def strip_solutions(markdown: str) -> str:
    """``markdown`` without its ``:::{solution}`` blocks (a page's, or a stray one in a cell)."""
    return SOLUTION_BLOCK.sub("", markdown)


def unlink_teacher_pages(markdown: str) -> str:
    """``markdown`` with its ``{doc}`` links to the pages the student book leaves out
    (``TEACHER_ONLY``) turned into plain text, so that nothing links to a missing page."""
    def plain(match):
        label, target = match.group(1), match.group(2) or match.group(3)
        if f"book/{target.rsplit('/', 1)[-1]}" not in TEACHER_ONLY:
            return match.group(0)
        return label or target.rsplit("/", 1)[-1].replace("_", " ")
    return DOC_LINK.sub(plain, markdown)


def as_plain_markdown(markdown: str) -> str:
    """MyST that Jupyter would show as raw text, in plain Markdown: exercises become a bold
    *Exercise* paragraph, ``{term}`x``` and ``{doc}`x``` their text, ``{cite}`key``` ``[key]``."""
    markdown = EXERCISE_BLOCK.sub(lambda m: "**Exercise.** " + m.group(3).rstrip() + "\n", markdown)
    markdown = ROLE.sub(lambda m: m.group(2), markdown)
    return CITE.sub(lambda m: "[" + m.group(1) + "]", markdown)


def _source_lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    return lines


def student_notebook(notebook: dict, *, outputs: bool) -> dict:
    """A copy of ``notebook`` without solutions, answer cells and hidden checks.

    ``outputs``: keep the code cells' outputs (the book's pages show them) or clear them
    (the notebooks a class runs). Without outputs, MyST is also made plain Markdown.
    """
    notebook = copy.deepcopy(notebook)
    kept = []
    for cell in notebook["cells"]:
        if HIDDEN & set(tags(cell)):
            continue
        if cell["cell_type"] == "markdown":
            text = strip_solutions("".join(cell["source"]))
            if not outputs:
                text = as_plain_markdown(text)
            cell["source"] = _source_lines(text)
        elif cell["cell_type"] == "code" and not outputs:
            cell["outputs"], cell["execution_count"] = [], None
        kept.append(cell)
    notebook["cells"] = kept
    return notebook


def code_of(notebook: dict) -> list[tuple[str, str]]:
    return [(c.get("id", ""), "".join(c["source"])) for c in notebook["cells"] if c["cell_type"] == "code"]


def executed_notebook(source: Path, executed_dir: Path = EXECUTED) -> dict:
    """The executed copy of ``source`` that ``make book`` wrote, if its code is the source's."""
    path = executed_dir / source.name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make book` first")
    executed = json.loads(path.read_text())
    if code_of(executed) != code_of(json.loads(source.read_text())):
        raise FileNotFoundError(f"{path} is older than {source.name}'s code: run `make book` first")
    return executed


def dump(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def student_toc(toc: dict) -> dict:
    """The table of contents without the teacher's pages."""
    toc = copy.deepcopy(toc)
    for part in toc.get("parts", []):
        part["chapters"] = [c for c in part["chapters"] if c.get("file") not in TEACHER_ONLY]
    return toc


INTRO_NOTE = """
## For students

This is the student edition: the exercises are here, their solutions are not. The
notebooks to open in Jupyter or on Colab, without answers:
{{download}}`{zip_name} <{zip_name}>`.
"""


def write_edition(out: Path, *, executed_dir: Path = EXECUTED, book: Path = ROOT / "book") -> Path:
    """Write the student notebooks, their zip and the student book's sources under ``out``.

    Returns the source folder to build (``out / "src"``)."""
    src, notebooks = out / "src", out / "notebooks"
    for folder in (src, notebooks):
        if folder.exists():
            shutil.rmtree(folder)
    (src / "book").mkdir(parents=True)
    notebooks.mkdir(parents=True)
    for path in sorted(book.glob("*.ipynb")):
        clean = student_notebook(json.loads(path.read_text()), outputs=False)
        (notebooks / path.name).write_text(dump(clean))
        page = student_notebook(executed_notebook(path, executed_dir), outputs=True)
        (src / "book" / path.name).write_text(dump(page))
    with zipfile.ZipFile(out / ZIP_NAME, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(notebooks.glob("*.ipynb")):
            archive.write(path, f"sgdlab-notebooks/{path.name}")
    shutil.copy(out / ZIP_NAME, src / "book" / ZIP_NAME)
    for path in sorted(book.iterdir()):
        if path.suffix == ".md":
            text = unlink_teacher_pages(strip_solutions(path.read_text()))
            if path.stem == "intro":
                text += INTRO_NOTE.format(zip_name=ZIP_NAME)
            (src / "book" / path.name).write_text(text)
        elif path.suffix not in (".ipynb",) and path.is_file():
            shutil.copy(path, src / "book" / path.name)
    config = student_config(yaml.safe_load((ROOT / "_config.yml").read_text()))
    config["execute"] = {**config.get("execute", {}), "execute_notebooks": "off"}
    sphinx_config = config["sphinx"]["config"]
    sphinx_config["html_static_path"] = [str(ROOT / p) for p in sphinx_config.get("html_static_path", [])]
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    toc = student_toc(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    (src / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    return src


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "_build" / "student"))
    parser.add_argument("--check", action="store_true", help="only say whether make book's notebooks are current")
    args = parser.parse_args(argv)
    try:
        if args.check:
            for path in sorted((ROOT / "book").glob("*.ipynb")):
                executed_notebook(path)
            return 0
        print(write_edition(Path(args.out)))
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

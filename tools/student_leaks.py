"""Does a built student edition reveal an answer? Lists every place where it does.

Usage: python tools/student_leaks.py [SITE ...]   (default: _build/student/_build/html and
_build/student/notebooks; exit status 1 when something leaks)

The answers are the teacher edition's:

* each solution's text (cells tagged ``solution``, ``:::{solution}`` blocks of pages), cut at
  Markdown and maths markup into runs of words long enough to be unmistakable;
* what the answer cells (tagged ``answer``) and the hidden checks (``remove-cell``) printed
  when ``make book`` ran them (``_build/jupyter_execute/book``): each line of their outputs,
  and each decimal number in those lines with three or more significant digits.

Every file of the site is searched (pages, ``_sources`` downloads, notebooks, the zip's
members; not ``_static``, the theme's and MathJax's scripts), as text, with HTML entities decoded and JSON strings unescaped.
"""

from __future__ import annotations

import html
import json
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from student_edition import EXECUTED, HIDDEN, tags  # noqa: E402

MARKUP = re.compile(r"https?://\S+|\$[^$]*\$|`[^`]*`|\{[^}]*\}|[*_#>\[\]()<>:|]|\\\w+")  # links are no solution text
NUMBER = re.compile(r"(?<![\w.])\d*\.\d{2,}(?![\w.])|(?<![\w.])\d{3,}(?:\.\d+)?(?![\w.])")
MIN_FRAGMENT = 30      # characters: a run of plain words this long is the solution's own
MIN_LINE = 12
SOLUTION_BLOCK = re.compile(r"^(:{3,})\{solution\}[^\n]*\n(?::[\w-]+:[^\n]*\n)*(.*?)^\1[ \t]*$", re.S | re.M)
DETAILS = re.compile(r"<summary>Solution</summary>(.*?)</details>", re.S)


def _flat(text: str) -> str:
    return " ".join(text.split())


def solution_fragments(markdown: str) -> set[str]:
    """The runs of plain words, at least MIN_FRAGMENT characters, of a solution's Markdown."""
    return {_flat(part) for part in MARKUP.split(markdown) if len(_flat(part)) >= MIN_FRAGMENT}


def solution_texts(book: Path) -> list[str]:
    """Every solution of the book's notebooks and pages, as Markdown."""
    texts = []
    for path in sorted(book.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "markdown" and "solution" in tags(cell):
                texts += DETAILS.findall(source) or [source]
            elif cell["cell_type"] == "markdown":
                texts += [m.group(2) for m in SOLUTION_BLOCK.finditer(source)]
    for path in sorted(book.glob("*.md")):
        texts += [m.group(2) for m in SOLUTION_BLOCK.finditer(path.read_text())]
    return texts


def output_text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append("".join(output["text"]))
        for kind in ("text/plain", "text/markdown"):
            if kind in output.get("data", {}):
                parts.append("".join(output["data"][kind]))
    return "\n".join(parts)


def answer_values(executed: Path) -> set[str]:
    """What the answer cells and hidden checks printed: their lines, and their precise numbers
    (those that no other cell shows)."""
    values, shown = set(), set()
    for path in sorted(executed.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            if not {"answer", "remove-cell"} & set(tags(cell)):
                shown.update(NUMBER.findall(output_text(cell)))
                continue
            for line in output_text(cell).splitlines():
                line = _flat(line)
                if len(line) >= MIN_LINE:
                    values.add(line)
                values.update(NUMBER.findall(line))
    return values - shown   # a number the chapter shows anyway (SGD's loss, beside GD's) is no answer


def readable(path: Path, data: bytes) -> list[str]:
    """The text a reader could find in a file: raw, entity-decoded, and JSON strings unescaped."""
    text = data.decode("utf-8", errors="replace")
    texts = [text, html.unescape(text)]
    if path.suffix in (".ipynb", ".json"):
        try:
            texts.append(" ".join(_strings(json.loads(text))))
        except ValueError:
            pass
    return [_flat(t) for t in texts]


def _strings(value) -> list[str]:
    """The strings of a JSON document; a list of strings (a notebook's lines) joined into one."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ["".join(value)]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for v in items for s in _strings(v)]


def site_texts(site: Path):
    """(name, text) of every file under ``site``, the zips' members included."""
    for path in sorted(p for p in site.rglob("*") if p.is_file()):
        if "_static" in path.relative_to(site).parts:
            continue   # the theme's and MathJax's files (minified numbers galore); no page writes there
        if path.suffix in (".png", ".jpg", ".svg", ".woff", ".woff2", ".ttf", ".ico", ".gif"):
            continue
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    for text in readable(Path(member), archive.read(member)):
                        yield f"{path.relative_to(site)}!{member}", text
            continue
        for text in readable(path, path.read_bytes()):
            yield str(path.relative_to(site)), text


def leaks(sites: list[Path], *, book: Path = ROOT / "book", executed: Path = EXECUTED) -> list[str]:
    """Each (file, answer) pair where a file under ``sites`` holds a teacher's answer."""
    fragments = {f for text in solution_texts(book) for f in solution_fragments(text)}
    values = answer_values(executed)
    numbers = {v for v in values if NUMBER.fullmatch(v)}
    lines = values - numbers
    found = set()
    for site in sites:
        for name, text in site_texts(site):
            for needle in fragments | lines:
                if needle in text:
                    found.add(f"{name}: {needle[:70]!r}")
            for number in numbers:
                if re.search(rf"(?<![\w.]){re.escape(number)}(?![\w.])", text):
                    found.add(f"{name}: the answer value {number}")
    return sorted(found)


def needles(*, book: Path = ROOT / "book", executed: Path = EXECUTED) -> tuple[set[str], set[str]]:
    """The solution fragments and the answer values :func:`leaks` looks for."""
    return {f for text in solution_texts(book) for f in solution_fragments(text)}, answer_values(executed)


if __name__ == "__main__":
    student = ROOT / "_build" / "student"
    sites = [Path(a) for a in sys.argv[1:]] or [student / "_build" / "html", student / "notebooks"]
    found = leaks(sites)
    print("\n".join(found) or "no answer found in " + ", ".join(map(str, sites)))
    sys.exit(1 if found else 0)

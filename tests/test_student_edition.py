"""The student edition takes out every answer; solutions fold in Jupyter and stay directives in the book.

These check the tools on small notebooks. The built edition itself (`make student`) is searched
for the teacher's answers by browser/test_student_edition.py, after `make book`.
"""

import json
import re
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import fold_solutions  # noqa: E402
import student_edition  # noqa: E402
import student_leaks  # noqa: E402

NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
SOLUTION = "Six sevens make forty-two, as every pupil of the times table knows."


def cell(kind, text, tags=(), outputs=()):
    c = {"cell_type": kind, "id": f"c{abs(hash((kind, text))) % 10**8}", "metadata": {"tags": list(tags)},
         "source": text.splitlines(keepends=True)}
    if kind == "code":
        c.update(outputs=list(outputs), execution_count=1 if outputs else None)
    return c


def printed(text):
    return {"output_type": "stream", "name": "stdout", "text": [text]}


def chapter():
    """A chapter as the book keeps it: an exercise, its folded solution, a self-check, an
    answer cell, a hidden check."""
    return {"cells": [
        cell("markdown", "# A chapter\n\nSee the {term}`barrier` {cite}`xing2018walk`."),
        cell("code", "x = 6 * 7\nprint('the product is computed')", outputs=[printed("the product is computed\n")]),
        cell("markdown", ":::{exercise}\n:label: ex-product\n\nWhat is 6 x 7?\n:::"),
        cell("markdown", fold_solutions.folded(SOLUTION), tags=["solution"]),
        cell("code", "my_answer = ...\ncheck_number(my_answer, x)", outputs=[printed("still empty\n")]),
        cell("code", "print(f'the answer is {x / 100:.3f}')", tags=["answer"], outputs=[printed("the answer is 0.420\n")]),
        cell("code", "assert x == 42\nprint('hidden 0.42042')", tags=["remove-cell"], outputs=[printed("hidden 0.42042\n")]),
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_the_student_notebook_has_no_solution_no_answer_cell_and_no_hidden_check():
    for outputs in (True, False):
        text = json.dumps(student_edition.student_notebook(chapter(), outputs=outputs))
        assert "forty-two" not in text and "0.420" not in text and "0.42042" not in text and "assert" not in text
        assert "What is 6 x 7?" in text and "my_answer = ..." in text
    assert "the product is computed" in json.dumps(student_edition.student_notebook(chapter(), outputs=True))


def test_notebooks_for_jupyter_have_no_outputs_and_no_myst_that_jupyter_shows_raw():
    notebook = student_edition.student_notebook(chapter(), outputs=False)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in notebook["cells"] if c["cell_type"] == "code")
    markdown = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    assert ":::" not in markdown and "{term}" not in markdown and "{cite}" not in markdown
    assert "**Exercise.** What is 6 x 7?" in markdown and "See the barrier [xing2018walk]." in markdown


def test_a_page_loses_its_solution_blocks_and_keeps_its_exercises():
    page = ":::{exercise}\n:label: e\n\nAsk.\n:::\n\n:::{solution} e\n:class: dropdown\n\n" + SOLUTION + "\n:::\n\nAfter.\n"
    stripped = student_edition.strip_solutions(page)
    assert "forty-two" not in stripped and "Ask." in stripped and "After." in stripped


def test_a_folded_solution_becomes_the_exercise_s_directive_in_the_book():
    book = fold_solutions.as_directives(chapter())
    solution = "".join(book["cells"][3]["source"])
    assert solution.startswith(":::{solution} ex-product\n:class: dropdown\n") and SOLUTION in solution
    assert "<details" not in solution


def test_folding_a_directive_round_trips():
    notebook = {"cells": [cell("markdown", ":::{exercise}\n:label: e1\n\nAsk.\n:::\n\n:::{solution} e1\n:class: dropdown\n\n"
                                            + SOLUTION + "\n:::")]}
    folded = fold_solutions.fold(notebook)
    assert [c.get("metadata", {}).get("tags", []) for c in folded["cells"]] == [[], ["solution"]]
    assert "".join(folded["cells"][1]["source"]) == fold_solutions.folded(SOLUTION)
    back = fold_solutions.as_directives(folded)
    assert "".join(back["cells"][1]["source"]) == fold_solutions.directive("e1", SOLUTION)


def test_a_solution_without_an_exercise_or_a_malformed_one_is_refused():
    with pytest.raises(ValueError, match="no exercise"):
        fold_solutions.as_directives({"cells": [cell("markdown", fold_solutions.folded("x"), tags=["solution"])]})
    with pytest.raises(ValueError, match="must be"):
        fold_solutions.body_of(":::{solution} e\nx\n:::")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_solution_of_the_book_is_folded_and_follows_an_exercise(path):
    notebook = json.loads(path.read_text())
    for c in notebook["cells"]:
        text = "".join(c["source"])
        assert "{solution}" not in text, f"{path.name}: run `python tools/fold_solutions.py {path.relative_to(ROOT)}`"
        if "solution" in student_edition.tags(c):
            fold_solutions.body_of(text)
    fold_solutions.as_directives(notebook)   # every solution has its exercise


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_start_empty(path):
    """An exercise is answered by the reader: its variables start as ``...``, never a value."""
    for c in json.loads(path.read_text())["cells"]:
        for line in "".join(c["source"]).splitlines():
            if c["cell_type"] == "code" and re.match(r"\s*my_\w+\s*=", line):
                assert re.match(r"\s*my_\w+\s*=\s*\.\.\.", line), f"{path.name}: pre-filled answer {line!r}"


def test_the_edition_writes_stripped_notebooks_a_zip_and_a_book_without_answers(tmp_path):
    book, executed = tmp_path / "book", tmp_path / "executed"
    book.mkdir(), executed.mkdir()
    source = chapter()
    for c in source["cells"]:
        if c["cell_type"] == "code":
            c["outputs"], c["execution_count"] = [], None
    (book / "walk.ipynb").write_text(json.dumps(source))
    (executed / "walk.ipynb").write_text(json.dumps(chapter()))
    (book / "intro.md").write_text("# Intro\n")
    (book / "page.md").write_text(":::{solution} e\n" + SOLUTION + "\n:::\n")
    src = student_edition.write_edition(tmp_path / "out", executed_dir=executed, book=book)
    with zipfile.ZipFile(tmp_path / "out" / student_edition.ZIP_NAME) as archive:
        assert archive.namelist() == ["sgdlab-notebooks/walk.ipynb"]
    assert "{download}`student-notebooks.zip" in (src / "book" / "intro.md").read_text()
    assert (src / "book" / student_edition.ZIP_NAME).is_file()
    assert "teaching" not in (src / "_toc.yml").read_text()
    assert "execute_notebooks: 'off'" in (src / "_config.yml").read_text()
    found = student_leaks.leaks([tmp_path / "out"], book=book, executed=executed)
    assert found == [], found
    # ... and the same search finds what the teacher's edition shows
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "walk.ipynb").write_text(json.dumps(chapter()))
    found = student_leaks.leaks([teacher], book=book, executed=executed)
    assert any("forty-two" in f for f in found) and any("0.420" in f for f in found), found


def test_notebooks_older_than_their_code_are_refused(tmp_path):
    book, executed = tmp_path / "book", tmp_path / "executed"
    book.mkdir(), executed.mkdir()
    (book / "walk.ipynb").write_text(json.dumps(chapter()))
    with pytest.raises(FileNotFoundError, match="run `make book` first"):
        student_edition.executed_notebook(book / "walk.ipynb", executed)
    stale = chapter()
    stale["cells"][1]["source"] = ["x = 6 * 8\n"]
    (executed / "walk.ipynb").write_text(json.dumps(stale))
    with pytest.raises(FileNotFoundError, match="older than"):
        student_edition.executed_notebook(book / "walk.ipynb", executed)


def test_answer_values_are_lines_and_precise_numbers_that_the_chapter_does_not_show_elsewhere(tmp_path):
    executed = chapter()
    executed["cells"][1]["outputs"] = [printed("a shown value 0.420\n")]
    (tmp_path / "walk.ipynb").write_text(json.dumps(executed))
    values = student_leaks.answer_values(tmp_path)
    assert "the answer is 0.420" in values and "0.42042" in values and "0.420" not in values


def test_links_to_pages_the_student_book_leaves_out_become_plain_text():
    from student_edition import unlink_teacher_pages

    text = ("at most 90 s ({doc}`measured <build_report>`); see {doc}`build_report`, "
            "and {doc}`the walk <walk>`.")
    assert unlink_teacher_pages(text) == "at most 90 s (measured); see build report, and {doc}`the walk <walk>`."

"""The book's build tools: the student edition hides every solution; notebook timings are read back."""

import sys
from pathlib import Path

import pytest
import yaml
from sphinx.application import Sphinx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from student_config import STUDENT_BRANCH, student_config  # noqa: E402
from notebook_times import notebook_times  # noqa: E402

PAGE = """# A page

:::{exercise}
:label: ex-one

What is 6 x 7?
:::

:::{solution} ex-one
:class: dropdown

The answer is forty-two.
:::
"""


def build_page(tmp_path, config: dict) -> str:
    """Build one MyST page with the book's Sphinx settings in ``config``; return its HTML."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "index.md").write_text(PAGE)
    overrides = dict(config["sphinx"]["config"])
    overrides.pop("bibtex_reference_style", None)
    (source / "conf.py").write_text(
        f"extensions = ['myst_parser', *{config['sphinx']['extra_extensions']!r}]\n"
        f"myst_enable_extensions = {config['parse']['myst_enable_extensions']!r}\n"
        + "".join(f"{k} = {v!r}\n" for k, v in overrides.items() if k != "nb_execution_show_tb"))
    app = Sphinx(str(source), str(source), str(tmp_path / "html"), str(tmp_path / "doctrees"), "html",
                 status=None, warning=None)  # two builds in one process re-register nodes: not our warnings
    app.build()
    return (tmp_path / "html" / "index.html").read_text()


@pytest.mark.parametrize("edition", ["book", "student"])
def test_the_student_edition_and_only_it_hides_solutions(tmp_path, edition):
    book = yaml.safe_load((ROOT / "_config.yml").read_text())
    config = student_config(book) if edition == "student" else book
    html = build_page(tmp_path, config)
    assert "What is 6 x 7?" in html
    assert ("forty-two" in html) == (edition == "book")


def test_student_config_changes_nothing_else():
    book = yaml.safe_load((ROOT / "_config.yml").read_text())
    student = student_config(book)
    assert student["title"].endswith("(student edition)")
    assert {k: v for k, v in student.items() if k not in ("title", "sphinx", "repository")} == \
        {k: v for k, v in book.items() if k not in ("title", "sphinx", "repository")}
    # its Colab buttons open the student notebooks, which the book's workflow publishes
    assert student["repository"] == {**book["repository"], "branch": STUDENT_BRANCH}
    workflow = (ROOT / ".github" / "workflows" / "book.yml").read_text()
    assert f"git push --force origin HEAD:{STUDENT_BRANCH}" in workflow
    assert student["sphinx"]["extra_extensions"] == book["sphinx"]["extra_extensions"]
    # its config file lives in _build/student: local extensions must still be found
    assert student["sphinx"]["local_extensions"].keys() == book["sphinx"]["local_extensions"].keys()
    assert all((Path(folder) / f"{name}.py").is_file() for name, folder in student["sphinx"]["local_extensions"].items())


def test_notebook_times_need_a_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `make book` first"):
        notebook_times(tmp_path)


def test_the_katex_stylesheet_is_the_version_that_renders_the_maths():
    """The maths is rendered at build time by sphinxcontrib-katex's own KaTeX; the page styles it
    with the stylesheet and fonts from web/package.json: a different version misplaces glyphs."""
    import json

    from sphinxcontrib import katex

    pinned = json.loads((ROOT / "web" / "package.json").read_text())["dependencies"]["katex"]
    assert pinned == katex.katex_version


def test_a_notebook_s_folded_solution_renders_as_the_exercise_s_solution_in_the_book(tmp_path):
    """tools/fold_solutions.py, loaded as the book loads it: the <details> cell becomes
    sphinx-exercise's solution, linked to its exercise, and hide_solutions removes it."""
    import json
    from fold_solutions import folded

    book = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert book["sphinx"]["local_extensions"]["fold_solutions"] == "tools/"
    notebook = {"cells": [
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": [":::{exercise}\n", ":label: ex-one\n", "\n",
                                                                         "What is 6 x 7?\n", ":::"]},
        {"cell_type": "markdown", "id": "b", "metadata": {"tags": ["solution"]}, "source": [folded("The answer is forty-two.")]},
    ], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}
    for edition, config in (("book", book["sphinx"]["config"]), ("student", student_config(book)["sphinx"]["config"])):
        source = tmp_path / edition
        source.mkdir()
        (source / "index.ipynb").write_text(json.dumps(notebook))
        (source / "conf.py").write_text(
            f"import sys; sys.path.insert(0, {str(ROOT / 'tools')!r})\n"
            "extensions = ['myst_nb', 'sphinx_exercise', 'fold_solutions']\n"
            "nb_execution_mode = 'off'\nmyst_enable_extensions = ['colon_fence']\n"
            f"hide_solutions = {config.get('hide_solutions', False)!r}\n")
        app = Sphinx(str(source), str(source), str(source / "html"), str(source / "doctrees"), "html",
                     status=None, warning=None)
        app.build()
        html = (source / "html" / "index.html").read_text()
        assert "What is 6 x 7?" in html and "&lt;details" not in html and "<details" not in html
        assert ("forty-two" in html) == (edition == "book")
        if edition == "book":
            assert 'class="solution' in html and "ex-one" in html


def test_the_katex_server_is_connected_once_it_listens_not_refused_while_it_binds(tmp_path):
    """tools/katex_start.py: a server that binds its socket, then listens only later, is connected
    to (sphinxcontrib-katex's own start tries once and fails the build); one that never listens
    times out with the extension's error, and its process is stopped."""
    import katex_start

    slow = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); time.sleep(float(sys.argv[2]))\n"
            "s.listen(); time.sleep(30)\n")

    class Fake:
        delay = 0.3

        @classmethod
        def build_command(cls, socket):
            return [sys.executable, "-c", slow, str(socket), str(cls.delay)]

        @classmethod
        def timeout_error(cls, timeout):
            return TimeoutError(f"no KaTeX server within {timeout} s")

    process, sock = katex_start.start_server_process(Fake, tmp_path, 5.0)
    try:
        assert sock.getpeername() == str(tmp_path / "katex.sock")
    finally:
        sock.close()
        process.kill()
    Fake.delay = 30
    (tmp_path / "katex.sock").unlink()
    with pytest.raises(TimeoutError, match="within 0.5 s"):
        katex_start.start_server_process(Fake, tmp_path, 0.5)

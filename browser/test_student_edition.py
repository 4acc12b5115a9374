"""The built student edition (`make student`, after `make book`) reveals no answer.

Searched: every file of its site (pages, `_sources` downloads, the notebooks zip) and the
student notebooks. Looked for: the teacher edition's solution texts and what its answer cells
and hidden checks printed when `make book` ran them (tools/student_leaks.py says how).
"""

import json
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import student_leaks  # noqa: E402
from student_edition import ZIP_NAME  # noqa: E402

STUDENT = ROOT / "_build" / "student"
SITE = STUDENT / "_build" / "html"


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").is_file():
        pytest.fail(f"{SITE} is missing: run `make student` first", pytrace=False)
    return SITE


def test_there_are_answers_to_look_for():
    fragments, values = student_leaks.needles()
    assert len(fragments) >= 10 and len(values) >= 10


def test_the_student_edition_reveals_no_answer(site):
    found = student_leaks.leaks([site, STUDENT / "notebooks"])
    assert not found, f"{len(found)} answers in the student edition:\n  " + "\n  ".join(found[:40])


def test_the_intro_links_the_student_notebooks_and_the_zip_holds_every_chapter(site):
    intro = (site / "book" / "intro.html").read_text()
    assert ZIP_NAME in intro
    chapters = sorted(p.name for p in (ROOT / "book").glob("*.ipynb"))
    with zipfile.ZipFile(STUDENT / ZIP_NAME) as archive:
        assert sorted(Path(n).name for n in archive.namelist()) == chapters
        for name in archive.namelist():
            notebook = json.loads(archive.read(name))
            assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code"), name

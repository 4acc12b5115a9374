"""Write the student edition's Jupyter Book config: the book's _config.yml with every solution hidden.

Usage: python tools/student_config.py OUT.yml   (``make student`` calls it)
"""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The branch that holds the student notebooks (book/*.ipynb, stripped): .github/workflows/book.yml
# publishes it from main, and the student edition's Colab buttons open the notebooks there.
STUDENT_BRANCH = "student-notebooks"


def student_config(config: dict) -> dict:
    """The book's config with sphinx-exercise's ``hide_solutions`` on, the title marked, and the
    launch buttons pointed at the student notebooks (the branch :data:`STUDENT_BRANCH`).

    Local extensions are found relative to the config file, which for the student edition
    lives elsewhere: their folders become absolute paths into the repository.
    """
    config = dict(config)
    sphinx = dict(config.get("sphinx") or {})
    sphinx["config"] = {**(sphinx.get("config") or {}), "hide_solutions": True}
    if sphinx.get("local_extensions"):
        sphinx["local_extensions"] = {name: str(ROOT / folder) for name, folder in sphinx["local_extensions"].items()}
    config["sphinx"] = sphinx
    config["title"] = f"{config['title']} (student edition)"
    config["repository"] = {**config["repository"], "branch": STUDENT_BRANCH}
    return config


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/student_config.py OUT.yml")
    book = yaml.safe_load((ROOT / "_config.yml").read_text())
    Path(sys.argv[1]).write_text(yaml.safe_dump(student_config(book), sort_keys=False))

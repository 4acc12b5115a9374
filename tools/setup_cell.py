"""Where the book lives, read from its one source, and the notebooks' set-up cell written from it.

The package name and the repository URL are written once, in pyproject.toml (``[project] name``,
``[project.urls] Repository``); the version once, in sgdlab/__init__.py (``__version__``, which
pyproject.toml reads). The first code cell of every notebook (the Colab set-up) is rendered from
them by this script; tests/test_notebooks.py fails when a notebook's cell differs.

Usage: python tools/setup_cell.py   rewrites the first code cell of every book/*.ipynb
(after a version bump, or in a fork whose repository URL changed). Nothing else in a notebook changes.
"""

import ast
import json
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def project(root: Path = ROOT) -> dict:
    """``name``, ``version``, ``repository`` (URL, no trailing slash) and ``pages`` (the book's
    GitHub Pages URL, derived from the repository) of the project in ``root``."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    init = ast.parse((root / "sgdlab" / "__init__.py").read_text())
    version = next(node.value.value for node in init.body if isinstance(node, ast.Assign)
                   and any(getattr(target, "id", None) == "__version__" for target in node.targets))
    repository = pyproject["urls"]["Repository"].rstrip("/")
    owner, name = repository.removeprefix("https://github.com/").split("/")
    return dict(name=pyproject["name"], version=version, repository=repository,
                pages=f"https://{owner.lower()}.github.io/{name}/")


def setup_cell(project: dict) -> str:
    """The set-up cell, the same in every chapter. On Colab it installs the release the book was
    built with from PyPI, falls back to the same release from the repository's tag, and stops with
    plain instructions (no traceback) when neither installs. Everywhere it picks the gpu preset
    when a GPU is present and prints the preset it runs with."""
    name, version = project["name"], project["version"]
    return f'''# Set-up, the same in every chapter. On Colab: install sgdlab, and use the
# gpu preset when a GPU is present.
import os, subprocess, sys
if "google.colab" in sys.modules:
    release = "{name}=={version}"  # the release this book was built with
    source = "git+{project["repository"]}@v{version}"  # same, from source
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    # the source only if PyPI fails; if both fail, say what to do (no traceback)
    if all(subprocess.run(pip + [r]).returncode for r in (release, source)):
        raise SystemExit(
            f"Could not install {{release}} (pip says why above). Check that "
            "this runtime is online and run this cell again, or run "
            f"!pip install {{source}}  in a new cell, then this one.")
    import torch
    if torch.cuda.is_available():
        os.environ.setdefault("SGDLAB_PRESET", "gpu")
import sgdlab
preset = sgdlab.setup_chapter()'''


def first_code_cell(notebook: dict) -> dict:
    return next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")


def write_setup_cells(root: Path = ROOT) -> list[Path]:
    """Rewrite the first code cell of every ``book/*.ipynb`` under ``root``; return the notebooks changed.

    The notebooks keep their JSON layout (indent 1, UTF-8 as is, a final newline).
    """
    source = setup_cell(project(root)).splitlines(keepends=True)
    changed = []
    for path in sorted((root / "book").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        cell = first_code_cell(notebook)
        if cell["source"] != source:
            cell["source"] = source
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 1:
        sys.exit("usage: python tools/setup_cell.py")
    for path in write_setup_cells():
        print(f"rewrote the set-up cell of {path.relative_to(ROOT)}")

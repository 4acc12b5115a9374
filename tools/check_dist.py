"""Check a built wheel and sdist beyond what ``twine check`` does: the licence file is inside,
and the metadata carries the licence, the version and the URLs of pyproject.toml.

Usage: python tools/check_dist.py dist/   (``make dist`` and the release workflow call it after
``twine check --strict``; tests/test_publishing.py calls ``check_wheel`` and ``check_sdist``)
"""

import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

from setup_cell import ROOT, project, tomllib


def expected_urls(root: Path = ROOT) -> list[str]:
    """The ``Project-URL`` lines pyproject.toml asks for, as "Label, URL"."""
    urls = tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]
    return [f"{label}, {url}" for label, url in urls.items()]


def check_metadata(text: str, root: Path = ROOT) -> None:
    """Raise ``ValueError`` naming what is missing from a METADATA / PKG-INFO text."""
    metadata, info = HeaderParser().parsestr(text), project(root)
    expected = {"Name": info["name"], "Version": info["version"], "License-Expression": "MIT",
                "License-File": "LICENSE", "Description-Content-Type": "text/markdown"}
    for field, value in expected.items():
        if metadata.get(field) != value:
            raise ValueError(f"metadata field {field} is {metadata.get(field)!r}; expected {value!r}")
    if sorted(metadata.get_all("Project-URL") or []) != sorted(expected_urls(root)):
        raise ValueError(f"metadata Project-URL is {metadata.get_all('Project-URL')}; expected {expected_urls(root)}")


def check_wheel(path: Path, root: Path = ROOT) -> None:
    """The wheel holds every module of sgdlab/, the LICENSE text, and metadata as pyproject says."""
    info = project(root)
    dist_info = f"{info['name']}-{info['version']}.dist-info"
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        modules = {f"sgdlab/{module.name}" for module in (root / "sgdlab").glob("*.py")}
        if modules - names:
            raise ValueError(f"{path.name} lacks {sorted(modules - names)}")
        licence = f"{dist_info}/licenses/LICENSE"
        if licence not in names or wheel.read(licence).decode() != (root / "LICENSE").read_text():
            raise ValueError(f"{path.name} does not carry the LICENSE file as {licence}")
        check_metadata(wheel.read(f"{dist_info}/METADATA").decode(), root)


def check_sdist(path: Path, root: Path = ROOT) -> None:
    """The sdist holds the LICENSE, the README the metadata renders, and metadata as pyproject says."""
    info = project(root)
    top = f"{info['name']}-{info['version']}"
    with tarfile.open(path) as sdist:
        names = set(sdist.getnames())
        for needed in ("LICENSE", "README.md", "pyproject.toml", "sgdlab/__init__.py", "PKG-INFO"):
            if f"{top}/{needed}" not in names:
                raise ValueError(f"{path.name} lacks {needed}")
        check_metadata(sdist.extractfile(f"{top}/PKG-INFO").read().decode(), root)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/check_dist.py DIST_FOLDER")
    folder = Path(sys.argv[1])
    wheels, sdists = sorted(folder.glob("*.whl")), sorted(folder.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        sys.exit(f"{folder} should hold one wheel and one sdist; it holds {[p.name for p in folder.iterdir()]}")
    try:
        check_wheel(wheels[0])
        check_sdist(sdists[0])
    except ValueError as error:
        sys.exit(f"check_dist: {error}")
    print(f"check_dist: {wheels[0].name} and {sdists[0].name} carry the licence, version and URLs")

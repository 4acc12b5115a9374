"""Publishing: the wheel installs in a fresh environment and carries the licence and URLs; every
place that names the repository, the package or its version agrees with the one source; the
workflows hold the jobs and steps the README describes; ``TORCH=cpu`` installs PyTorch's CPU build.

Nothing here uses the network: the wheel is built without build isolation and installed with
``--no-index``; its dependencies come from the environment running the tests.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from check_dist import check_sdist, check_wheel  # noqa: E402
from setup_cell import project, tomllib  # noqa: E402

PROJECT = project()
OWNER_NAME = PROJECT["repository"].removeprefix("https://github.com/")
README = (ROOT / "README.md").read_text()


# --- the wheel and the sdist -------------------------------------------------------------------

@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict:
    """Wheel and sdist built offline from a copy of the files an sdist needs (the checkout stays clean)."""
    tmp = tmp_path_factory.mktemp("dist")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "sgdlab", source / "sgdlab", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp / "dist"
    build = ("import setuptools.build_meta as backend, sys; out = sys.argv[1]; "  # the backend rewrites sys.argv
             "backend.build_sdist(out); backend.build_wheel(out)")
    subprocess.run([sys.executable, "-c", build, str(out)], cwd=source, check=True, capture_output=True)
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return dict(wheel=wheel, sdist=sdist, tmp=tmp)


def test_wheel_and_sdist_carry_the_licence_version_and_urls(dist):
    check_wheel(dist["wheel"])
    check_sdist(dist["sdist"])
    assert dist["wheel"].name == f"sgdlab-{PROJECT['version']}-py3-none-any.whl"


def test_the_wheel_check_refuses_a_wheel_without_its_licence(dist, tmp_path):
    broken = tmp_path / dist["wheel"].name
    with zipfile.ZipFile(dist["wheel"]) as good, zipfile.ZipFile(broken, "w") as bad:
        for item in good.infolist():
            if not item.filename.endswith("licenses/LICENSE"):
                bad.writestr(item, good.read(item))
    with pytest.raises(ValueError, match="does not carry the LICENSE"):
        check_wheel(broken)


def test_the_wheel_installs_into_a_fresh_environment_and_imports(dist):
    venv = dist["tmp"] / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # torch and the other dependencies: this environment's, found after the fresh site-packages
    # (a plain path line: this environment's own .pth files, such as an editable sgdlab, stay inactive)
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-index", str(dist["wheel"])], check=True)
    probe = ("import importlib.metadata as m, sgdlab; d = m.distribution('sgdlab'); "
             "print(sgdlab.__file__); print(sgdlab.__version__); print(d.metadata['License-Expression']); "
             "print(d.locate_file('')); print(sgdlab.make_model.__name__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    lines = subprocess.run([python, "-c", probe], cwd=dist["tmp"], env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    assert Path(lines[0]).is_relative_to(site), f"sgdlab was imported from {lines[0]}, not the installed wheel"
    assert lines[1:3] == [PROJECT["version"], "MIT"]
    assert Path(lines[3]) == site and lines[4] == "make_model"


# --- one source for where the book lives --------------------------------------------------------

def test_the_version_is_written_once_and_read_by_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in pyproject and "version" in pyproject["dynamic"]
    import sgdlab
    assert sgdlab.__version__ == PROJECT["version"]


def test_book_config_names_the_repository_of_pyproject():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == PROJECT["repository"]
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


def test_citation_names_this_version_repository_and_the_two_papers():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert citation["version"] == PROJECT["version"]
    assert citation["repository-code"] == PROJECT["repository"] and citation["url"] == PROJECT["pages"]
    titles = [reference["title"] for reference in citation["references"]]
    assert titles == ["A Walk with SGD: How SGD Explores Regions of Deep Network Loss?",
                      "An Alternative View: When Does SGD Escape Local Minima?"]
    assert citation["references"][0]["doi"] == "10.48550/arXiv.1802.08770"
    assert [a["family-names"] for a in citation["references"][1]["authors"]] == ["Kleinberg", "Li", "Yuan"]


TEXTS = ["README.md", "CONTRIBUTING.md", "CITATION.cff", "_config.yml", "pyproject.toml",
         *(f"book/{p.name}" for p in sorted((ROOT / "book").glob("*.md"))),
         *(f"book/{p.name}" for p in sorted((ROOT / "book").glob("*.ipynb")))]


@pytest.mark.parametrize("name", TEXTS)
def test_every_mention_of_the_repository_or_a_release_agrees_with_the_one_source(name):
    text = (ROOT / name).read_text().replace("OWNER/NAME", OWNER_NAME)  # the README's placeholder for a fork
    text = text.replace("https://OWNER.github.io/NAME/", PROJECT["pages"])
    repositories = set(re.findall(r"github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?(?=[/\s)`\"'@]|$)", text))
    assert repositories <= {OWNER_NAME}, f"{name} names {repositories - {OWNER_NAME}}"
    pages = set(re.findall(r"https://[\w-]+\.github\.io/[\w.-]+/?", text)) - {"https://citation-file-format.github.io"}
    assert pages <= {PROJECT["pages"], PROJECT["pages"].rstrip("/")}, f"{name} names {pages}"
    assert set(re.findall(r"sgdlab==([\w.]+)", text)) <= {PROJECT["version"]}


def test_readme_colab_link_is_the_one_jupyter_book_makes():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    link = (f"{config['launch_buttons']['colab_url']}/github/{OWNER_NAME}/blob/"
            f"{config['repository']['branch']}/book/quickstart.ipynb")
    assert link in README


# --- licence ------------------------------------------------------------------------------------

def test_licence_is_mit_for_the_contributors_and_stated_in_the_book():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n\nCopyright (c) 2026 the sgdlab contributors\n")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in licence
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT" and pyproject["project"]["license-files"] == ["LICENSE"]
    assert "setuptools>=77" in pyproject["build-system"]["requires"]
    assert "MIT licence" in (ROOT / "book" / "intro.md").read_text()


# --- workflows, as the README's "Publishing" section describes them ------------------------------

def workflow(name: str) -> dict:
    data = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def steps(job: dict) -> list[str]:
    """Each step as its `uses` (without version) or its `run` text."""
    return [step["uses"].split("@")[0] if "uses" in step else step["run"] for step in job["steps"]]


def test_book_workflow_tests_on_every_push_and_deploys_main_to_pages():
    book = workflow("book.yml")
    assert book["on"]["push"]["branches"] == ["main"] and "pull_request" in book["on"]
    assert set(book["jobs"]) == {"test", "deploy", "student-notebooks"}
    test, deploy, student = (book["jobs"][name] for name in ("test", "deploy", "student-notebooks"))
    assert test["container"].startswith("debian:")
    install, checkout, make_test, student_pages, upload, keep_notebooks = steps(test)
    assert re.search(r"apt-get install .*\bchromium\b.*\bnpm\b", install.replace("\\\n", " "))
    assert checkout == "actions/checkout" and make_test == "make test"
    assert student_pages == "cp -R _build/student/_build/html _build/html/student"  # /student/ on the site
    assert upload == "actions/upload-pages-artifact" and test["steps"][4]["with"]["path"] == "_build/html"
    assert keep_notebooks == "actions/upload-artifact" and test["steps"][5]["with"]["path"] == "_build/student/notebooks"
    main_only = "github.ref == 'refs/heads/main'"
    assert all(main_only in step["if"] for step in test["steps"][3:])
    assert main_only in deploy["if"] and main_only in student["if"]
    assert deploy["needs"] == "test" and deploy["environment"]["name"] == "github-pages"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert steps(deploy) == ["actions/deploy-pages"]
    # only the job that publishes the student notebooks may write to the repository
    assert student["needs"] == "test" and student["permissions"] == {"contents": "write"}
    assert steps(student)[:2] == ["actions/checkout", "actions/download-artifact"]


def test_release_workflow_checks_every_push_and_publishes_tags_with_trusted_publishing():
    release = workflow("release.yml")
    assert release["on"]["push"]["tags"] == ["v*"] and "pull_request" in release["on"]
    assert release["permissions"] == {"contents": "read"}
    dist, pypi, github = release["jobs"]["dist"], release["jobs"]["pypi"], release["jobs"]["github-release"]
    checkout, python, make_dist, tag_check, upload = steps(dist)
    assert make_dist.startswith("make dist") and upload == "actions/upload-artifact"
    assert "GITHUB_REF_NAME" in tag_check and "v$version" in tag_check
    assert pypi["needs"] == "dist" and pypi["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert pypi["permissions"] == {"id-token": "write"} and pypi["environment"]["name"] == "pypi"
    assert steps(pypi) == ["actions/download-artifact", "pypa/gh-action-pypi-publish"]
    assert "with" not in pypi["steps"][1], "trusted publishing: no password or token"
    assert github["needs"] == "pypi" and "gh release create" in steps(github)[1]
    text = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert "secrets." not in text and not re.search(r"password\s*:", text)


def test_readme_publishing_section_describes_the_workflows_and_make_dist():
    section = README.split("## Publishing", 1)[1].split("\n## ", 1)[0]
    for needed in (".github/workflows/book.yml", ".github/workflows/release.yml", "make dist",
                   "GitHub Actions", "trusted publisher", "python tools/setup_cell.py", "git tag v"):
        assert needed in section, f"README's Publishing section does not mention {needed!r}"


# --- the API reference ---------------------------------------------------------------------------

def test_api_reference_documents_every_module_and_public_name_and_the_intro_links_it():
    import sgdlab
    pages = sorted((ROOT / "book").glob("api_*.md"))
    documented = [m for page in pages for m in re.findall(r"^\.\. automodule:: (\S+)$", page.read_text(), re.MULTILINE)]
    assert len(documented) == len(set(documented)), "a module is documented on two API pages"
    modules = {("sgdlab/" + p.relative_to(ROOT / "sgdlab").with_suffix("").as_posix()).removesuffix("/__init__")
               .replace("/", ".") for p in (ROOT / "sgdlab").rglob("*.py") if p.name not in ("__main__.py", "cli.py")}
    modules -= {"sgdlab"}  # the package's face: its names are documented where they live
    assert not sorted(modules - set(documented)), "modules that no API page documents"
    for name in sgdlab.__all__:
        module = getattr(getattr(sgdlab, name), "__module__", None)
        assert module is None or module in documented, f"sgdlab.{name} lives in {module}, which no API page documents"
    index, toc = (ROOT / "book" / "api.md").read_text(), (ROOT / "_toc.yml").read_text()
    assert "file: book/api" in toc
    for page in pages:
        assert f"file: book/{page.stem}" in toc and f"<{page.stem}>`" in index, page.stem
    assert "{doc}`api`" in (ROOT / "book" / "intro.md").read_text()
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "sphinx.ext.autodoc" in config["sphinx"]["extra_extensions"]


def test_make_test_runs_the_docstring_examples(tmp_path):
    lines = make_dry_run("test", tmp_path=tmp_path).stdout.splitlines()
    assert any("-m pytest" in line and "--doctest-modules sgdlab" in line for line in lines)


# --- make dist, TORCH=cpu -----------------------------------------------------------------------

def make_dry_run(*arguments: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``make -n`` with a .venv that does not exist yet, so that the install rule is printed."""
    return subprocess.run(["make", "-n", *arguments, f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                          capture_output=True, text=True)


def test_make_with_torch_cpu_installs_the_pinned_torch_from_the_cpu_index_first(tmp_path):
    pins = re.findall(r"^(torch(?:vision)?==\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert len(pins) == 2
    for target in ("book", "test"):
        lines = make_dry_run(target, "TORCH=cpu", tmp_path=tmp_path).stdout.splitlines()
        cpu = [i for i, line in enumerate(lines) if "--index-url https://download.pytorch.org/whl/cpu" in line]
        requirements = [i for i, line in enumerate(lines) if "-r requirements.txt" in line]
        assert cpu and lines[cpu[0]].split()[-2:] == pins and cpu[0] < requirements[0]
        default = make_dry_run(target, tmp_path=tmp_path).stdout
        assert "download.pytorch.org" not in default and "-r requirements.txt" in default


def test_make_refuses_an_unknown_torch_flavour(tmp_path):
    result = make_dry_run("book", "TORCH=cuda", tmp_path=tmp_path)
    assert result.returncode != 0 and "TORCH=cuda is not known" in result.stderr


def test_make_dist_builds_then_checks_with_twine_and_the_dist_checker(tmp_path):
    lines = make_dry_run("dist", tmp_path=tmp_path).stdout.splitlines()
    commands = [line for line in lines if "-m build" in line or "twine check" in line or "check_dist.py" in line]
    assert [c.split()[1:4] for c in commands] == [["-m", "build", "--outdir"], ["-m", "twine", "check"],
                                                  ["tools/check_dist.py", "dist"]]
    assert "--strict" in commands[1] and any("requirements-dev.txt" in line for line in lines)

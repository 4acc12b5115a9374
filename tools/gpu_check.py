"""`make test-gpu`: the unit tests on CUDA, then every chapter on the gpu preset on CUDA, and one table.

1. Where MNIST or CIFAR-10 is absent under the data folder (``--data``, default
   ``$SGDLAB_DATA`` or ``~/.cache/sgdlab``), writes full-size stand-ins in the real on-disk
   formats (:mod:`sgdlab.standin`); chapters run on them say so in their first line, and
   record nothing on the scoreboard.
2. Runs the unit tests with ``SGDLAB_TEST_DEVICE=cuda`` (tests/conftest.py).
3. Executes every chapter (book/*.ipynb) with ``SGDLAB_PRESET=gpu`` on CUDA, each in its own
   process with its own time limit (``--timeout``, seconds), results into a scratch folder.
4. Prints one table: chapter, seconds, figures, checks passed (the ``assert`` lines of the
   chapter's hidden check cells, counted when their cell ran without error), status.

Logs and the executed notebooks go under ``$OUT`` if set, else ``_build/gpu-check``.
Exit status 0 only if the unit tests and every chapter passed.

    python tools/gpu_check.py [--data DIR] [--timeout 300] [--chapters walk seeds] [--no-tests]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
BOOK = REPOSITORY / "book"
# notebook and book-build tests: the chapters are run below instead, on the gpu preset
NOT_UNIT_TESTS = ("test_notebooks.py", "test_book.py", "test_publishing.py", "test_student_edition.py")


def chapter_summary(path: Path, out: Path, cell_timeout: int) -> dict:
    """Execute one chapter (in this process) and describe what it did."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, 4)
    client = nbclient.NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(BOOK)}})
    error = None
    started = time.perf_counter()
    try:
        client.execute()
    except Exception as exc:  # noqa: BLE001 - the summary reports any failure of the chapter
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    seconds = time.perf_counter() - started
    nbformat.write(nb, out / f"{path.stem}.ipynb")
    figures = checks = checks_total = 0
    first_line = ""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = cell.get("outputs", [])
        for output in outputs:
            if not first_line and output.get("name") == "stdout":
                first_line = output["text"].splitlines()[0] if output["text"] else ""
            if "image/png" in output.get("data", {}):
                figures += 1
        if cell.source.lstrip().startswith("# Checks"):
            asserts = sum(1 for line in cell.source.splitlines() if line.lstrip().startswith("assert "))
            checks_total += asserts
            ran = cell.get("execution_count") is not None and not any(o.get("output_type") == "error" for o in outputs)
            checks += asserts if ran else 0
    return dict(chapter=path.stem, seconds=round(seconds, 1), figures=figures, checks=checks,
                checks_total=checks_total, error=error, first_line=first_line)


def run_chapter(path: Path, out: Path, timeout: int, env: dict) -> dict:
    """One chapter in a child process, killed after ``timeout`` seconds."""
    summary_file = out / f"{path.stem}.json"
    log = out / f"{path.stem}.log"
    command = [sys.executable, __file__, "--one", str(path), "--out", str(out), "--timeout", str(timeout)]
    started = time.perf_counter()
    with open(log, "w") as stream:
        try:
            subprocess.run(command, env=env, stdout=stream, stderr=subprocess.STDOUT, timeout=timeout + 30, check=False)
        except subprocess.TimeoutExpired:
            return dict(chapter=path.stem, seconds=round(time.perf_counter() - started, 1), figures=0, checks=0,
                        checks_total=0, error=f"timed out after {timeout} s", first_line="")
    if not summary_file.exists():
        return dict(chapter=path.stem, seconds=round(time.perf_counter() - started, 1), figures=0, checks=0,
                    checks_total=0, error=f"no summary (see {log})", first_line="")
    return json.loads(summary_file.read_text())


def table(rows: list[dict]) -> str:
    lines = [f"{'chapter':16s} {'seconds':>8s} {'figures':>8s} {'checks passed':>14s}  status",
             "-" * 72]
    for r in rows:
        status = "ok" if r["error"] is None else r["error"][:60]
        if r["error"] is None and "STAND-IN" in r["first_line"]:
            status += " (stand-in data)"
        lines.append(f"{r['chapter']:16s} {r['seconds']:8.1f} {r['figures']:8d} "
                     f"{str(r['checks']) + ' / ' + str(r['checks_total']):>14s}  {status}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="data folder (default: $SGDLAB_DATA or ~/.cache/sgdlab)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed to each chapter")
    parser.add_argument("--chapters", nargs="*", help="chapter names (default: every book/*.ipynb)")
    parser.add_argument("--no-tests", action="store_true", help="skip the unit tests")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # child: one chapter
        out = Path(args.out)
        summary = chapter_summary(Path(args.one), out, args.timeout)
        (out / f"{Path(args.one).stem}.json").write_text(json.dumps(summary) + "\n")
        return 0

    sys.path.insert(0, str(REPOSITORY))
    from sgdlab import standin
    from sgdlab.data import data_root

    out = Path(os.environ.get("OUT") or REPOSITORY / "_build" / "gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    root = data_root(args.data)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    written = standin.write_standins(root)
    print(f"data in {root}: stand-ins written for {written or 'none'} "
          f"({time.perf_counter() - started:.0f} s); stand-ins present: "
          f"{[n for n in standin.FOLDERS if standin.is_standin(n, root)] or 'none'}", flush=True)

    env = dict(os.environ, SGDLAB_DATA=str(root), PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])))
    env.pop("MPLBACKEND", None)
    ok = True
    if not args.no_tests:
        tests = [str(p) for p in sorted((REPOSITORY / "tests").glob("test_*.py")) if p.name not in NOT_UNIT_TESTS]
        log = out / "unit-tests.log"
        print(f"unit tests on {args.device} -> {log}", flush=True)
        with open(log, "w") as stream:
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests],
                                    env=dict(env, SGDLAB_TEST_DEVICE=args.device), cwd=REPOSITORY,
                                    stdout=stream, stderr=subprocess.STDOUT, check=False)
        summary = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        print(f"unit tests: {summary[0]}", flush=True)
        ok = result.returncode == 0

    names = args.chapters or sorted(p.stem for p in BOOK.glob("*.ipynb"))
    chapter_env = dict(env, SGDLAB_PRESET="gpu", SGDLAB_DEVICE=args.device, SGDLAB_PROGRESS="1",
                       SGDLAB_RESULTS_DIR=tempfile.mkdtemp(prefix="sgdlab-gpu-check-results-"))
    rows = []
    for name in names:
        print(f"chapter {name} (at most {args.timeout} s) ...", flush=True)
        rows.append(run_chapter(BOOK / f"{name}.ipynb", out, args.timeout, chapter_env))
        print(f"  {rows[-1]['seconds']} s, {rows[-1]['error'] or 'ok'}", flush=True)
    text = table(rows)
    (out / "table.txt").write_text(text + "\n")
    print(text)
    return 0 if ok and all(r["error"] is None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

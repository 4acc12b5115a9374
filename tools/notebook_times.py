"""Print how long each notebook took to execute in the last ``make book``.

Reads the execution records that MyST-NB keeps in the Sphinx environment of the build.
Usage: python tools/notebook_times.py [BUILD_DIR]   (default: _build)
"""

import pickle
import sys
from pathlib import Path


def notebook_times(build: Path) -> dict:
    """docname -> (seconds, succeeded) of every executed notebook of the last build."""
    environment = build / ".doctrees" / "environment.pickle"
    if not environment.exists():
        raise FileNotFoundError(f"no build environment at {environment}: run `make book` first")
    with open(environment, "rb") as f:
        env = pickle.load(f)  # our own build's file
    records = getattr(env, "nb_metadata", {})
    return {doc: (meta["exec_data"]["runtime"], meta["exec_data"]["succeeded"])
            for doc, meta in sorted(records.items()) if meta.get("exec_data")}


def main(build: Path) -> int:
    times = notebook_times(build)
    for doc, (seconds, succeeded) in times.items():
        print(f"{doc:<28} {seconds:7.1f} s" + ("" if succeeded else "  FAILED"))
    print(f"{'all notebooks':<28} {sum(s for s, _ in times.values()):7.1f} s")
    return 0 if all(ok for _, ok in times.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("_build")))
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")

"""Sweeps: a grid of runs, each an ordinary resumable run directory, on a process pool or a Slurm cluster.

    python -m sgdlab sweep walk --preset paper --grid seed=0,1,2 --grid lr=0.05,0.1 --out runs/walk-grid --backend slurm
    python -m sgdlab sweep show runs/walk-grid

A sweep directory holds

* ``sweep.json``      the manifest: experiment, preset, and each point's name and full settings;
* ``sweep.json.lock`` held (``filelock``) by the one sweep that validates, writes the manifest and submits;
* one run directory per point (:mod:`sgdlab.runs`), named from the grid's settings (``lr-0.05_seed-1``);
* ``.submitit/``      the Slurm (or submitit-local) jobs' pickles and logs.

Every grid value is read with the setting's declared type and every point checked by the
experiment (its data and model prepared) before anything is written or submitted. A point
already finished is skipped; one that failed, was killed or pre-empted is submitted again
and resumes from its checkpoints, ending with the same ``params_sha256`` as an
uninterrupted run. A point whose settings differ from those stored under its name is
refused, naming the keys that differ. Two runs of one point cannot write at once: each
run directory has its own lock (:mod:`sgdlab.runs`).

A second sweep of the same directory waits for nothing: it is refused while another holds
the manifest (a local sweep holds it until its points end, a Slurm sweep while it submits),
and it skips points whose run another process holds. A Slurm job still queued from an
earlier sweep may be submitted again; whichever of the two starts second finds the run
finished (nothing recomputed) or held, and ends.

This module is engine-agnostic (grid, names, states, aggregation); the backends are small
(:mod:`sgdlab.backends`): ``local`` (a ``concurrent.futures`` process pool, one worker per
GPU or per group of CPU cores) and ``slurm`` (``submitit`` job arrays; requeue on
pre-emption is submitit's). Everything it needs from the run machinery goes through one adapter, ``_Runs``.
It is long because it holds both halves of a sweep, running and showing, which share the
grid's names and the manifest's format; each half reads top to bottom on its own.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import math
import os
import re
import statistics
from pathlib import Path
from typing import Callable

import filelock

from . import runs
from .experiments import EXPERIMENTS
from .files import write_text_atomic
from .presets import get_preset
from .settings import apply_settings, as_settings, config_from_settings

MANIFEST = "sweep.json"
SEED_KEY = "seed"  # the setting aggregated over (mean ± standard deviation)


class SweepError(ValueError):
    """A sweep that cannot start; the message says why (the CLI prints it)."""


# ---------------------------------------------------------------------------------------
# The one coupling to the run-directory machinery (sgdlab.runs): its public entry points
# ---------------------------------------------------------------------------------------

class _Runs:
    """What a sweep asks of single runs; nothing else in this module touches :mod:`sgdlab.runs`.

    A point's settings are the plain JSON form of the experiment's ``Config``
    (:func:`sgdlab.settings.as_settings`), as its run directory stores them.
    """

    @staticmethod
    def settings(experiment: str, preset: str | None, assignments: list[str]) -> dict:
        """The preset's settings with ``key=value`` assignments, each read as its declared type."""
        module = EXPERIMENTS[experiment]
        try:
            config = apply_settings(getattr(get_preset(preset), module.NAME), assignments, module.CHOICES)
        except ValueError as error:
            raise SweepError(str(error)) from None
        return as_settings(config)

    @staticmethod
    def check(experiment: str, settings: dict, download: bool) -> None:
        """The experiment's own checks of one point (data and model prepared; nothing written)."""
        module = EXPERIMENTS[experiment]
        try:
            module.prepare(config_from_settings(module.Config, settings), download=download)
        except (runs.RunError, ValueError, FileNotFoundError) as error:
            raise SweepError(str(error)) from None

    @staticmethod
    def start(experiment: str, preset: str, settings: dict, out: Path, download: bool) -> dict:
        module = EXPERIMENTS[experiment]
        return runs.start(module, get_preset(preset), config_from_settings(module.Config, settings), out,
                          download=download, progress=False)

    @staticmethod
    def show(out: Path) -> dict:
        return runs.show(out)

    @staticmethod
    def lock_file(out: Path) -> Path:
        return Path(out) / runs.LOCK_FILE

    @staticmethod
    def errors() -> tuple:
        return (runs.RunError, ValueError, FileNotFoundError)


# ---------------------------------------------------------------------------------------
# The grid and its points
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Point:
    name: str        # the run directory's name under the sweep directory
    settings: dict   # every setting of the run (the preset's, --set, then this point's grid values)


def parse_grid(experiment: str, preset: str | None, assignments: list[str], grid: list[str]) -> tuple[dict, dict]:
    """The base settings (preset and ``--set``) and the grid: setting -> its values, in the order given.

    ``--grid key=v1,v2`` gives one point per value; for a setting that is itself a list
    (``epochs``, ``batch_sizes``) points are separated by ``;`` (``--grid "epochs=1,10;1,10,25"``).
    Each value is read exactly as ``--set key=value`` would read it (type, choices)."""
    base = _Runs.settings(experiment, preset, assignments)
    values: dict[str, list] = {}
    for item in grid:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise SweepError(f"--grid {item!r}: expected key=value1,value2,..., e.g. --grid seed=0,1,2")
        if key in values:
            raise SweepError(f"--grid {key}: given twice; list all its values in one --grid")
        if key not in base:
            raise SweepError(f"--grid {key}: not a setting of {experiment}; allowed: {', '.join(sorted(base))}")
        listed = isinstance(base[key], list)
        texts = [t for t in text.split(";" if listed else ",")]
        parsed = []
        for word in texts:
            try:
                value = _Runs.settings(experiment, preset, [*assignments, f"{key}={word}"])[key]
            except SweepError as error:
                raise SweepError(f"--grid {key}={text}: {str(error).removeprefix('--set ')}") from None
            if value in parsed:
                raise SweepError(f"--grid {key}={text}: {word.strip()!r} gives {value!r}, which is listed already")
            parsed.append(value)
        values[key] = parsed
    return base, values


def expand(base: dict, grid: dict) -> list[Point]:
    """Every combination of the grid's values (the last key varies fastest), each named from its values."""
    points = []
    for combination in itertools.product(*grid.values()):
        changes = dict(zip(grid, combination))
        points.append(Point(point_name(changes), {**base, **changes}))
    names = [p.name for p in points]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise SweepError(f"two points of the grid would share the directory {clash!r}; use values that differ in "
                         "letters and digits")
    return points


def point_name(changes: dict) -> str:
    """``lr-0.05_seed-1``: each grid setting and its value; lists joined with ``+``; unsafe characters as ``~``."""
    if not changes:
        return "point"
    def word(value):
        text = "+".join(map(str, value)) if isinstance(value, list) else str(value).lower() if value is None else str(value)
        return re.sub(r"[^A-Za-z0-9.+-]", "~", text)
    return "_".join(f"{key}-{word(value)}" for key, value in changes.items())


def differences(stored: dict, asked: dict) -> list[str]:
    """``key (stored a, asked b)`` for each key whose value differs."""
    keys = sorted(k for k in set(stored) | set(asked) if stored.get(k) != asked.get(k))
    return [f"{k} (stored {stored.get(k)!r}, asked {asked.get(k)!r})" for k in keys]


# ---------------------------------------------------------------------------------------
# The sweep directory: manifest, lock, states
# ---------------------------------------------------------------------------------------

def _manifest_lock(directory: Path) -> filelock.BaseFileLock:
    lock = filelock.FileLock(str(directory / f"{MANIFEST}.lock"), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise SweepError(f"another sweep is submitting to or running in {directory} (it holds "
                         f"{directory / (MANIFEST + '.lock')}); wait for it to end") from None
    return lock


def read_manifest(directory: str | Path) -> dict | None:
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        manifest["points"], manifest["experiment"]
    except (ValueError, KeyError, TypeError) as error:
        raise SweepError(f"{path} is not an sgdlab sweep manifest ({error}); repair or remove it") from None
    return manifest


def _merge(directory: Path, experiment: str, preset: str, points: list[Point]) -> dict:
    """The manifest with ``points`` added; ``SweepError`` naming the keys that differ when a point's name is
    stored (in the manifest or in its run directory) with other settings."""
    manifest = read_manifest(directory)
    if manifest is None:
        if directory.exists() and any(name != f"{MANIFEST}.lock" for name in os.listdir(directory)):
            raise SweepError(f"--out {directory} is not empty and holds no sweep ({MANIFEST}); choose a new or empty directory")
        manifest = dict(experiment=experiment, preset=preset, points={}, submissions=[])
    if (manifest["experiment"], manifest.get("preset")) != (experiment, preset):
        raise SweepError(f"{directory} holds a sweep of {manifest['experiment']} (preset {manifest.get('preset')}), "
                         f"not {experiment} (preset {preset}); choose another --out")
    for point in points:
        stored = manifest["points"].get(point.name)
        config = _config(directory / point.name)
        if config is not None:
            stored = dict(config.get("settings") or {}, preset=config.get("preset"), experiment=config.get("experiment"))
            asked = dict(point.settings, preset=preset, experiment=experiment)
        else:
            asked = point.settings
        if stored is not None and stored != asked:
            raise SweepError(f"point {point.name} in {directory} holds other settings: "
                             f"{', '.join(differences(stored, asked))}; nothing was submitted: choose another --out, "
                             "or delete that point's directory to run it again")
        manifest["points"][point.name] = point.settings
    return manifest


def _config(run: Path) -> dict | None:
    try:
        return json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return None


def _running_elsewhere(run: Path) -> bool:
    """Whether another process holds the run's lock (a worker of another sweep, or ``sgdlab run``)."""
    path = _Runs.lock_file(run)
    if not path.exists():
        return False
    lock = filelock.FileLock(str(path), timeout=0)
    try:
        with lock.acquire():
            return False
    except filelock.Timeout:
        return True


def point_state(run: Path) -> dict:
    """``state`` (``not started``, ``finished``, ``running``, ``failed``, ``diverged``, ``interrupted``,
    ``damaged``), ``message``, ``summary`` and ``params_sha256`` of one point's run directory."""
    if not (run / "config.json").exists():
        return dict(state="not started", message="", summary=None, params_sha256=None)
    try:
        shown = _Runs.show(run)
    except _Runs.errors() as error:
        return dict(state="damaged", message=str(error), summary=None, params_sha256=None)
    status = shown["status"] or {}
    state = status.get("state") or "running"
    message = status.get("message", "")
    if state == "finished" and shown["problems"]:
        state, message = "damaged", "; ".join(shown["problems"])
    return dict(state=state, message=message, summary=shown["summary"] if state == "finished" else None,
                params_sha256=shown["params_sha256"] if state == "finished" else None)


# ---------------------------------------------------------------------------------------
# Running a sweep
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Options:
    """How the backend runs the points."""

    backend: str = "local"           # "local" (process pool) or "slurm" (submitit)
    workers: int | None = None       # local: concurrent runs (default: one per GPU, else 1); slurm: array parallelism
    threads: int | None = None       # torch threads per run (default: local, the worker's CPU group; slurm, cpus)
    download: bool = False
    cluster: str = "slurm"           # submitit's cluster: "slurm", or "local" (the same code path on this machine)
    partition: str | None = None
    time_min: int = 24 * 60          # wall-clock limit of one job; a job past it is requeued, resumes
    gpus: int = 1                    # GPUs per job (slurm)
    cpus: int | None = None          # CPUs per job (slurm)
    mem_gb: float | None = None      # memory per job (slurm)
    wait: bool = False               # slurm: wait for the jobs and report their outcomes


def sweep(experiment: str, preset: str | None, assignments: list[str], grid: list[str], out: str | Path,
          options: Options, run_jobs: Callable[[list[tuple], Path, Options], list[dict]]) -> list[dict]:
    """Validate the grid, record it in the manifest, and run (local) or submit (slurm) the points that are
    not finished, with ``run_jobs`` (:func:`sgdlab.backends.runner` of ``options.backend``). Returns one
    outcome per point: ``name``, ``state``, ``message``."""
    preset = get_preset(preset).name
    base, values = parse_grid(experiment, preset, assignments, grid)
    points = expand(base, values)
    for point in points:  # every point checked before anything is written or submitted
        try:
            _Runs.check(experiment, point.settings, options.download)
        except SweepError as error:
            raise SweepError(f"point {point.name}: {error}") from None
    directory = Path(out)
    if os.path.lexists(directory) and not directory.is_dir():
        raise SweepError(f"--out {directory} is a file, not a directory")
    _merge(directory, experiment, preset, points)  # refuse changed settings before creating anything
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SweepError(f"--out {directory} cannot be created ({error.strerror}); choose a writable directory") from None
    with _manifest_lock(directory):
        manifest = _merge(directory, experiment, preset, points)  # again, under the lock
        outcomes, todo = {}, []
        for point in points:
            run = directory / point.name
            state = point_state(run)["state"]
            if state == "finished":
                outcomes[point.name] = dict(name=point.name, state="finished", message="skipped: finished already")
            elif _running_elsewhere(run):
                outcomes[point.name] = dict(name=point.name, state="running", message="skipped: running in another process")
            else:
                todo.append(point)
        jobs = [(experiment, preset, p.settings, str(directory / p.name), options.download, options.threads)
                for p in todo]
        manifest["submissions"].append(dict(
            time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            backend=options.backend, points=[p.name for p in todo]))
        write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=1))
        if todo:
            results = run_jobs(jobs, directory, options)
            for point, result in zip(todo, results):
                outcomes[point.name] = dict(name=point.name, **result)
            if options.backend == "slurm":
                manifest["submissions"][-1]["jobs"] = [r.get("job") for r in results]
                write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=1))
    return [outcomes[p.name] for p in points]


def run_point(experiment: str, preset: str, settings: dict, out: str, download: bool = False,
              threads: int | None = None) -> dict:
    """Run (or resume) one point in this process; its ``state`` and ``message`` (what a worker returns)."""
    if threads:
        import torch
        torch.set_num_threads(threads)
    try:
        shown = _Runs.start(experiment, preset, settings, Path(out), download)
    except _Runs.errors() as error:
        state = point_state(Path(out))["state"]
        return dict(state=state if state in ("diverged", "interrupted") else "failed", message=str(error))
    return dict(state=(shown["status"] or {}).get("state", "failed"), message="")


# ---------------------------------------------------------------------------------------
# Showing a sweep: one row per point, and the seeds aggregated
# ---------------------------------------------------------------------------------------

def key_numbers(experiment: str, summary: dict | None) -> dict:
    """The experiment's key numbers, flat: ``name -> number``.

    walk: per recorded epoch ``e``, ``steps@e``, ``barriers@e``, ``inside@e`` (the share of steps
    with a valley inside), ``rises@e``, ``falls@e`` (the valley floor) and ``loss@e``; curvature: per batch size ``b``, ``alignment@b`` (at
    its own batch size), ``cosine@b``, ``distance@b``, ``eigenvalue@b``; trajectory:
    ``exponent``, ``r2``, ``final_distance``, ``snapshots``; any other experiment: every
    number of its summary, by path."""
    if not summary:
        return {}
    try:
        return _key_numbers(experiment, summary)
    except (KeyError, TypeError, AttributeError):  # a summary of another shape: every number it holds
        return _flatten(summary)


def _key_numbers(experiment: str, summary: dict) -> dict:
    if experiment == "walk":
        fields = dict(steps="steps", barriers="barriers", inside="interior_minimum", rises="floor_rises",
                      falls="floor_falls", loss="mean_loss")
        return {f"{label}@{row['epoch']}": row[field] for row in summary["census"] for label, field in fields.items()}
    if experiment == "curvature":
        numbers = {}
        for b in summary["batch_sizes"]:
            part = summary[f"batch {b}"]
            numbers.update({f"alignment@{b}": part["alignment"][str(b)], f"cosine@{b}": part["mean_cosine"],
                            f"distance@{b}": part["distance"], f"eigenvalue@{b}": part["top_eigenvalue"]})
        return numbers
    if experiment == "trajectory":
        return {k: summary[k] for k in ("exponent", "r2", "final_distance", "snapshots")}
    return _flatten(summary)


def _flatten(value, prefix="") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}/").items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix.rstrip("/"): value}
    return {}


def show(directory: str | Path) -> dict:
    """The sweep in ``directory``: ``experiment``, ``preset``, ``points`` (one per point: ``name``, ``state``,
    ``message``, ``settings``, ``params_sha256``, ``numbers``) and ``aggregates`` (see :func:`aggregate`)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise SweepError(f"{directory} holds no sweep (no {MANIFEST})")
    jobs = {}  # point -> the last job submitted for it (slurm)
    for submission in manifest.get("submissions", []):
        jobs.update({n: j for n, j in zip(submission["points"], submission.get("jobs") or []) if j})
    points = []
    for name, settings in manifest["points"].items():
        state = point_state(directory / name)
        if state["state"] == "not started" and name in jobs:
            state.update(state="submitted", message=f"job {jobs[name]}: queued, or ended before starting the run")
        points.append(dict(name=name, state=state["state"], message=state["message"], settings=settings,
                           params_sha256=state["params_sha256"],
                           numbers=key_numbers(manifest["experiment"], state["summary"])))
    return dict(directory=str(directory), experiment=manifest["experiment"], preset=manifest.get("preset"),
                points=points, aggregates=aggregate(points, manifest["experiment"], manifest.get("preset")))


def aggregate(points: list[dict], experiment: str, preset: str | None) -> list[dict]:
    """The finished points grouped by every setting but ``seed``: per group ``name``, ``settings``
    (without the seed), ``seeds`` (of the finished points), ``points`` (all its points), and per key
    number its ``mean``, ``std`` (sample standard deviation across seeds, 0 for one seed) and
    ``values`` (in the order of ``seeds``)."""
    groups: dict[str, dict] = {}
    varying = [k for k in (points[0]["settings"] if points else {}) if k != SEED_KEY
               and len({json.dumps(p["settings"][k]) for p in points}) > 1]
    for point in points:
        settings = {k: v for k, v in point["settings"].items() if k != SEED_KEY}
        key = json.dumps(settings, sort_keys=True)
        group = groups.setdefault(key, dict(name=point_name({k: settings[k] for k in varying}) if varying else "all",
                                            experiment=experiment, preset=preset, settings=settings, seeds=[],
                                            points=[], numbers={}))
        group["points"].append(point["name"])
        if point["state"] == "finished":
            group["seeds"].append(point["settings"].get(SEED_KEY))
            for name, value in point["numbers"].items():
                group["numbers"].setdefault(name, dict(values=[]))["values"].append(value)
    for group in groups.values():
        for entry in group["numbers"].values():
            values = entry["values"]
            entry["mean"] = statistics.fmean(values)
            entry["std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return list(groups.values())


def format_table(shown: dict) -> str:
    """The sweep as text: one row per point (state and key numbers), then the seeds aggregated."""
    points = shown["points"]
    names = list(dict.fromkeys(n for p in points for n in p["numbers"]))
    states = [p["state"] for p in points]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    lines = [f"{shown['directory']}: {shown['experiment']} sweep, preset {shown['preset']}, {len(points)} points ({counts})"]
    rows = [["point", "state", *names]]
    rows += [[p["name"], p["state"], *(_number(p["numbers"].get(n)) for n in names)] for p in points]
    lines += _columns(rows)
    failed = [p for p in points if p["message"] and p["state"] != "finished"]
    lines += [f"  {p['name']}: {p['message']}" for p in failed]
    if any(len(g["seeds"]) > 1 for g in shown["aggregates"]):
        lines += ["", "across seeds: mean ± standard deviation"]
        rows = [["settings", "seeds", *names]]
        rows += [[g["name"], f"{len(g['seeds'])} of {len(g['points'])}",
                  *(f"{_number(g['numbers'][n]['mean'])} ± {_number(g['numbers'][n]['std'])}" if n in g["numbers"] else "-"
                    for n in names)] for g in shown["aggregates"]]
        lines += _columns(rows)
    return "\n".join(lines)


def _number(value) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4g}" if math.isfinite(value) else str(value)


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]

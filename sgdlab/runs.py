"""Run directories: long experiments that survive being killed, and what they leave behind.

An experiment (``walk``, ``curvature``, ``trajectory``) runs into a directory that holds

* ``config.json``  the experiment, its settings, the versions and the device;
* ``status.json``  ``running``, ``finished``, ``diverged``, ``failed`` or ``interrupted``, with a
                   message; a finished run's also holds ``params_sha256``;
* ``log.txt``      one line per event (start, resume, each part done, the end);
* ``.sgdlab.lock`` held by the one process that writes the directory (``filelock``);
* ``*.pt``         checkpoints written by :func:`sgdlab.train` (atomically; ``weights_only``);
* the results      (``walk.npz``, ``curvature.npz``, ``snapshots/``, ``history*.json``,
                   ``summary.json``) and ``final.pt``, the final parameters, whose SHA-256 is the
                   run's fingerprint (``params_sha256``): a resumed run must end with the same one.

Starting an experiment in a directory that holds an unfinished run of the same settings
resumes it; a finished one is verified (its files exist and ``final.pt`` has the recorded
fingerprint) and not recomputed, or restored from its checkpoints when something is missing;
other settings are refused, naming the keys that differ (``fresh=True`` starts over, in a
directory that holds a run). A directory that holds something else, or links, is refused.
Settings and data are validated before anything is written, so bad input leaves nothing
behind. Every file is written atomically and never through a link (:mod:`sgdlab.files`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import hashlib
import json
import math
import os
import platform
import re
import shutil
import types
import typing
from pathlib import Path
from typing import Callable

import filelock
import numpy as np
import torch

from .curvature import GradientCosineRecorder, alignment, top_eigenvalues
from .data import DATASETS, load_dataset, steps_per_epoch
from .files import TEMPORARY_SUFFIX, append_text, load_tensors, open_existing, write_atomic, write_text_atomic
from .params import BN_MODES
from .walk import WalkRecorder, check_eval_examples, record_walk
from .models import ARCHITECTURES, make_model
from .params import model_params
from .presets import Preset, default_device, describe
from .train import check_train_arguments, save_atomic, train
from .trajectory import DamagedSnapshots, DistanceFromInitRecorder, SnapshotRecorder, Trajectory, fit_power_law

LOCK_FILE = ".sgdlab.lock"


class RunError(Exception):
    """A run that cannot start or that ended badly; the message says why (the CLI prints it)."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    defaults: Callable[[Preset], dict]   # settings and their default values, from a preset
    types: dict                          # setting -> its declared type (int, float, str, list[int], int | None)
    prepare: Callable[[dict, bool], dict]  # (settings, download) -> data and model, every setting checked
    run: Callable[["RunDirectory", dict, dict, bool], dict]  # (directory, settings, prepared, progress) -> summary
    results: tuple = ()                  # files a finished run holds besides final.pt and summary.json
    choices: dict = dataclasses.field(default_factory=dict)  # setting -> allowed values


# ---------------------------------------------------------------------------------------
# The run directory
# ---------------------------------------------------------------------------------------

class RunDirectory:
    """The files of one run (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str) -> dict | None:
        """The JSON object in ``name``, ``None`` when absent; ``RunError`` naming the file when it is not one."""
        path = self.file(name)
        if not os.path.lexists(path):
            return None
        try:
            with open_existing(path) as f:
                value = json.loads(f.read().decode("utf-8"))
        except IsADirectoryError:
            reason = "it is a directory"
        except (ValueError, OSError) as error:  # links, invalid UTF-8, invalid JSON, unreadable
            reason = str(error).split(": ")[-1] if isinstance(error, ValueError) else error.strerror
        else:
            if isinstance(value, dict):
                return value
            reason = f"it holds a JSON {type(value).__name__}, not an object"
        raise RunError(f"{path} cannot be read ({reason}); the run directory is damaged: "
                       "repair or remove that file, or choose another --out")

    def write_json(self, name: str, value: dict) -> None:
        write_text_atomic(self.file(name), json.dumps(value, indent=1))

    def log(self, message: str) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        append_text(self.file("log.txt"), f"{stamp} {message}\n")

    def set_status(self, state: str, message: str = "", **extra) -> None:
        self.write_json("status.json", dict(state=state, message=message, **extra,
                                            updated=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")))

    def save_final(self, model: torch.nn.Module) -> None:
        save_atomic(model.state_dict(), self.file("final.pt"))


def params_sha256(path: str | Path) -> str:
    """SHA-256 of a saved state dict's tensors (names, shapes, dtypes and bytes, in key order)."""
    state = load_tensors(path, "final parameters")
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ValueError(f"final parameters {str(path)!r} are not a state dict (names and tensors)")
    digest = hashlib.sha256()
    for name, tensor in state.items():
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # reshape: 0-dim buffers too
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------

_EXPECTED = {int: "an integer, e.g. 3", float: "a finite number, e.g. 0.1", bool: "true or false", str: "text"}


def parse_setting(key: str, text: str, kind):
    """``--set key=text`` read as the setting's declared type ``kind``.

    ``kind`` is ``int``, ``float``, ``bool``, ``str``, ``list[int]`` (``1,10,25`` or
    ``[1, 10, 25]``), or one of them ``| None`` (then ``none`` or ``null`` gives ``None``).
    Numbers must be finite; an integer setting takes no fraction and no ``true``. Ranges
    (positive, at most the data set's size) are the experiment's to check.
    """
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    base = next(option for option in options if option is not type(None))
    optional = type(None) in options
    word = text.strip()
    if optional and word.lower() in ("none", "null"):
        return None
    if typing.get_origin(base) is list:
        items = [item.strip() for item in word.strip("[]").split(",")]
        try:
            if items and all(items):
                return [parse_setting(key, item, typing.get_args(base)[0]) for item in items]
        except RunError:
            pass
        expected = f"a list of integers, e.g. {key}=1,10,25"
    else:
        if base is bool and word.lower() in ("true", "false"):
            return word.lower() == "true"
        if base is int and re.fullmatch(r"[+-]?[0-9]+", word):
            return int(word)
        if base is float and re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", word) \
                and math.isfinite(float(word)):
            return float(word)
        if base is str and word:
            return word
        expected = _EXPECTED[base]
    raise RunError(f"--set {key}={text!r}: expected {expected}" + (" (or none)" if optional else ""))


def parse_settings(experiment: Experiment, preset: Preset, assignments: list[str]) -> dict:
    """The experiment's defaults from ``preset``, with ``key=value`` assignments applied, each read
    as its setting's declared type (:func:`parse_setting`)."""
    settings = experiment.defaults(preset)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RunError(f"--set {assignment!r}: expected key=value, e.g. --set lr=0.05")
        if key not in settings:
            raise RunError(f"--set {key}: not a setting of {experiment.name}; allowed: {', '.join(sorted(settings))}")
        settings[key] = parse_setting(key, text, experiment.types[key])
    for key, allowed in experiment.choices.items():
        if settings[key] not in allowed:
            raise RunError(f"{key}={settings[key]!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")
    return settings


def _check_positive(settings: dict, *keys: str) -> None:
    """Counts that must be positive integers (or None where the setting allows it)."""
    for key in keys:
        value = settings[key]
        values = value if isinstance(value, list) else [value]
        if not values or any(v is not None and v < 1 for v in values):
            raise RunError(f"{key}={value!r}: expected positive integers")


# ---------------------------------------------------------------------------------------
# Starting, resuming, showing
# ---------------------------------------------------------------------------------------

def _inspect(run: RunDirectory) -> dict | None:
    """The stored ``config.json`` of the run in ``run``, ``None`` for a new or empty directory.

    Refuses (``RunError``, naming what was found) a path that is not a directory, a directory
    that holds links, and a non-empty directory that holds no sgdlab run. Writes nothing."""
    path = run.path
    if os.path.islink(path) and not path.exists():
        raise RunError(f"--out {path} is a link to {os.readlink(path)}, which does not exist; choose a directory")
    if not path.exists():
        return None
    if not path.is_dir():
        raise RunError(f"--out {path} is a file, not a directory")
    try:
        entries = sorted(os.listdir(path))
        links = [name for name in entries if os.path.islink(path / name)]
        if "snapshots" in entries and (path / "snapshots").is_dir() and "snapshots" not in links:
            links += [f"snapshots/{name}" for name in os.listdir(path / "snapshots") if os.path.islink(path / "snapshots" / name)]
    except OSError as error:
        raise RunError(f"--out {path} cannot be read ({error.strerror}); choose another directory") from None
    if links:
        raise RunError(f"{path} holds symbolic links ({', '.join(links)}); a run directory holds none, so that no write "
                       "lands elsewhere: remove them")
    config = run.read_json("config.json")
    if config is None:
        found = [name for name in entries if name != LOCK_FILE]
        if found:
            raise RunError(f"--out {path} is not empty and holds no sgdlab run (found: {', '.join(found[:5])}"
                           f"{', ...' if len(found) > 5 else ''}); nothing was changed: choose a new or empty directory")
        return None
    if config.get("experiment") not in EXPERIMENTS:
        raise RunError(f"{run.file('config.json')} names no sgdlab experiment (experiment={config.get('experiment')!r}); "
                       "nothing was changed: this is not a run directory sgdlab can resume or replace")
    return config


def _refuse_other_settings(run: RunDirectory, stored: dict, experiment: Experiment, preset: Preset, settings: dict) -> None:
    if (stored.get("experiment"), stored.get("preset"), stored.get("settings")) == (experiment.name, preset.name, settings):
        return
    old = dict(experiment=stored.get("experiment"), preset=stored.get("preset"), **(stored.get("settings") or {}))
    new = dict(experiment=experiment.name, preset=preset.name, **settings)
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise RunError(f"{run.path} holds another run: {', '.join(f'{k} (stored {old.get(k)!r}, asked {new.get(k)!r})' for k in differ)}; "
                   "use --fresh to start over there, or choose another --out")


def _problems(run: RunDirectory, experiment: Experiment) -> list[str]:
    """What a finished run lacks: missing result files, or a ``final.pt`` without the recorded fingerprint."""
    status = run.read_json("status.json") or {}
    missing = [name for name in ("final.pt", "summary.json", *experiment.results) if not run.file(name).exists()]
    problems = [f"{name} is missing" for name in missing]
    if "final.pt" not in missing:
        try:
            if params_sha256(run.file("final.pt")) != status.get("params_sha256"):
                problems.append("final.pt does not have the fingerprint recorded when the run finished")
        except ValueError as error:
            problems.append(str(error).split("; sgdlab")[0])
    return problems


def _finished_and_intact(run: RunDirectory, experiment: Experiment) -> bool:
    return (run.read_json("status.json") or {}).get("state") == "finished" and not _problems(run, experiment)


def _make_directories(path: Path) -> list[Path]:
    """Create ``path`` and missing parents; return those created (deepest last)."""
    created = [p for p in (path, *path.parents) if not os.path.lexists(p)][::-1]
    try:
        for folder in created:
            folder.mkdir()
    except OSError as error:
        _remove_created(created)
        raise RunError(f"--out {path} cannot be created ({error.strerror}: {error.filename}); choose a writable directory") from None
    return created


def _remove_created(created: list[Path]) -> None:
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            lock = folder / LOCK_FILE
            if lock.exists() and not lock.is_symlink():
                lock.unlink()
            folder.rmdir()


def _lock(run: RunDirectory) -> filelock.BaseFileLock:
    """This process's lock on the run directory; ``RunError`` when another process holds it."""
    lock = filelock.FileLock(str(run.file(LOCK_FILE)), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise RunError(f"another process is running in {run.path} (it holds {run.file(LOCK_FILE)}); "
                       "wait for it to end, or choose another --out") from None
    except OSError as error:
        raise RunError(f"--out {run.path} is not writable ({error.strerror}); choose a writable directory") from None
    return lock


def _empty(run: RunDirectory) -> None:
    """Delete what a run directory holds, except the lock this process holds."""
    for name in os.listdir(run.path):
        if name != LOCK_FILE:
            target = run.file(name)
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()


def _remove_temporaries(run: RunDirectory) -> None:
    """Temporary files left by a killed writer (see :mod:`sgdlab.files`); only the lock holder runs this."""
    for folder in (run.path, run.file("snapshots")):
        if folder.is_dir():
            for name in os.listdir(folder):
                if name.endswith(TEMPORARY_SUFFIX) and (folder / name).is_file():
                    (folder / name).unlink()


def _prepare(experiment: Experiment, settings: dict, download: bool) -> dict:
    """The experiment's data and model, with every setting checked; nothing is written."""
    try:
        return experiment.prepare(settings, download)
    except (ValueError, FileNotFoundError) as error:
        raise RunError(str(error)) from None


def start(experiment: Experiment, preset: Preset, settings: dict, out: str | Path, *, fresh: bool = False,
          download: bool = False, progress: bool = True) -> dict:
    """Run (or resume) ``experiment`` into ``out``; return what :func:`show` returns."""
    run = RunDirectory(out)
    stored = _inspect(run)
    if stored is not None and not fresh:
        _refuse_other_settings(run, stored, experiment, preset, settings)
    if stored is not None and not fresh and _finished_and_intact(run, experiment):
        with _lock(run):
            run.log("asked again: the run is finished, nothing recomputed")
        return show(run.path)
    prepared = _prepare(experiment, settings, download)
    config = dict(experiment=experiment.name, preset=preset.name, settings=settings, describe=describe(preset),
                  python=platform.python_version(), torch=torch.__version__, device=str(default_device()))
    created = _make_directories(run.path)
    try:
        lock = _lock(run)
    except RunError:
        _remove_created(created)
        raise
    with lock:
        try:
            stored = _inspect(run)  # again: another process may have written here since
            if stored is not None and not fresh:
                _refuse_other_settings(run, stored, experiment, preset, settings)
        except RunError:
            _remove_created(created)
            raise
        return _run_locked(run, experiment, settings, prepared, config, stored, fresh, progress)


def _run_locked(run, experiment, settings, prepared, config, stored, fresh, progress) -> dict:
    recorded = None  # the fingerprint of a finished run that is being restored
    try:
        if fresh and stored is not None:
            _empty(run)
        _remove_temporaries(run)
        if stored is None or fresh:
            run.write_json("config.json", config)
            run.log(f"start {experiment.name} with {json.dumps(settings)}")
        else:
            status = run.read_json("status.json") or {}
            if status.get("state") == "finished":
                recorded = status.get("params_sha256")
                run.log(f"finished, but {'; '.join(_problems(run, experiment))}: restoring from the checkpoints")
            else:
                run.log("resume")
        run.set_status("running")
        summary = experiment.run(run, settings, prepared, progress)
        fingerprint = params_sha256(run.file("final.pt"))
        if recorded is not None and fingerprint != recorded:
            raise RunError(f"the restored final parameters have fingerprint {fingerprint}, not the {recorded} recorded "
                           "when the run finished: the checkpoints changed; start over with --fresh")
        run.write_json("summary.json", summary)
        run.set_status("finished", params_sha256=fingerprint)
        run.log("finished")
    except RunError as error:
        _record_end(run, "diverged" if "diverged" in str(error) else "failed", str(error))
        raise
    except KeyboardInterrupt:
        _record_end(run, "interrupted", "interrupted (SIGINT); run the same command to resume")
        raise
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        if error.errno == errno.ENOSPC:
            message = f"disk full while writing{where}; free some space and run the same command to resume"
            _record_end(run, "failed: disk full", message)
        else:
            message = f"{error.strerror or error}{where}; run the same command to resume once that is fixed"
            _record_end(run, "failed", message)
        raise RunError(message) from None
    except (ValueError, FileNotFoundError) as error:
        _record_end(run, "failed", str(error))
        raise RunError(str(error)) from None
    except BaseException as error:
        _record_end(run, "failed", f"{type(error).__name__}: {error}; run the same command to resume")
        raise
    return show(run.path)


def _record_end(run: RunDirectory, state: str, message: str) -> None:
    """Status and log line of a run that stopped; a full disk may refuse even these, which then stay unwritten."""
    with contextlib.suppress(OSError):
        run.set_status(state, message)
        run.log(f"stopped ({state}): {message}")


def show(path: str | Path) -> dict:
    """The run's configuration, status, summary, ``params_sha256`` (``None`` while unfinished) and,
    for a finished run, the ``problems`` that keep it from being trusted (empty when none)."""
    run = RunDirectory(path)
    if not run.path.is_dir():
        raise RunError(f"{run.path} holds no run (not a directory)")
    config = run.read_json("config.json")
    if config is None:
        raise RunError(f"{run.path} holds no run (no config.json)")
    experiment = EXPERIMENTS.get(config.get("experiment"))
    if experiment is None:
        raise RunError(f"{run.file('config.json')} names no sgdlab experiment (experiment={config.get('experiment')!r})")
    status = run.read_json("status.json")
    finished = (status or {}).get("state") == "finished"
    problems = _problems(run, experiment) if finished else []
    fingerprint = None
    if run.file("final.pt").exists() and not any(p.startswith("final parameters") for p in problems):
        with contextlib.suppress(ValueError):
            fingerprint = params_sha256(run.file("final.pt"))
    return dict(directory=str(run.path), config=config, status=status, summary=run.read_json("summary.json"),
                params_sha256=fingerprint, problems=problems)


def _train_checked(run: RunDirectory, label: str, model, data, **options):
    """``sgdlab.train`` with the run's conventions: checkpoints every 200 steps, divergence is an error."""
    history = train(model, data, checkpoint=run.file(f"checkpoint-{label}.pt"), checkpoint_every=200,
                    checkpoint_minutes=5.0, **options)
    history.save(run.file(f"history-{label}.json"))
    if history.diverged:
        raise RunError(f"training diverged ({label}): {history.stopped_because}")
    run.log(f"{label}: trained {history.steps} steps")
    return history


# ---------------------------------------------------------------------------------------
# The experiments
# ---------------------------------------------------------------------------------------

def _walk_defaults(preset: Preset) -> dict:
    return dict(arch=preset.mlp_arch, dataset=preset.mlp_dataset, epochs=list(preset.walk_epochs), train_epochs=None,
                steps=None, eval_examples=None, lr=0.1, batch_size=preset.walk_batch_size,
                weight_decay=float(preset.walk_weight_decay), bn="eval", seed=0)


WALK_TYPES = dict(arch=str, dataset=str, epochs=list[int], train_epochs=int | None, steps=int | None,
                  eval_examples=int | None, lr=float, batch_size=int, weight_decay=float, bn=str, seed=int)


def _walk_prepare(s: dict, download: bool) -> dict:
    _check_positive(s, "epochs", "train_epochs", "steps")
    data = load_dataset(s["dataset"], download=download)
    model = make_model(s["arch"], data, seed=s["seed"])
    WalkRecorder(s["epochs"], steps=s["steps"], bn=s["bn"])  # its constructor checks epochs, steps and bn
    check_eval_examples(s["eval_examples"], data)
    check_train_arguments(model, data, lr=s["lr"], batch_size=s["batch_size"], weight_decay=s["weight_decay"],
                          seed=s["seed"], epochs=max(max(s["epochs"]), s["train_epochs"] or 0))
    return dict(data=data, model=model)


def _walk(run: RunDirectory, s: dict, prepared: dict, progress: bool) -> dict:
    data, model = prepared["data"], prepared["model"]
    history, result = record_walk(
        model, data, epochs=s["epochs"], lr=s["lr"], batch_size=s["batch_size"], steps=s["steps"],
        eval_examples=s["eval_examples"], train_epochs=s["train_epochs"], bn=s["bn"], weight_decay=s["weight_decay"],
        seed=s["seed"], progress=progress, checkpoint=run.file("checkpoint-walk.pt"), checkpoint_every=200,
        save_to=run.file("walk.npz"))
    history.save(run.file("history-walk.json"))
    if history.diverged:
        raise RunError(f"training diverged: {history.stopped_because}")
    result.save(run.file("walk.npz"))
    run.save_final(model)
    return dict(census=[{k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}
                        for row in result.census()])


def _curvature_defaults(preset: Preset) -> dict:
    return dict(arch=preset.curvature_arch, dataset=preset.curvature_dataset, lr=float(preset.curvature_lr),
                batch_sizes=list(preset.curvature_batch_sizes), steps=preset.curvature_steps,
                batches=preset.curvature_batches, hessian_examples=preset.curvature_hessian_examples, seed=0)


CURVATURE_TYPES = dict(arch=str, dataset=str, lr=float, batch_sizes=list[int], steps=int, batches=int,
                       hessian_examples=int | None, seed=int)


def _curvature_prepare(s: dict, download: bool) -> dict:
    _check_positive(s, "batch_sizes", "steps", "batches", "hessian_examples")
    data = load_dataset(s["dataset"], download=download)
    model = make_model(s["arch"], data, seed=s["seed"])
    for b in s["batch_sizes"]:
        check_train_arguments(model, data, lr=s["lr"], batch_size=b, steps=s["steps"], seed=s["seed"])
    return dict(data=data)


def _curvature(run: RunDirectory, s: dict, prepared: dict, progress: bool) -> dict:
    data = prepared["data"]
    keep = slice(0, s["hessian_examples"])
    hx, hy = data.x_train[keep], data.y_train[keep]
    summary, arrays = dict(batch_sizes=s["batch_sizes"]), {}
    for b in s["batch_sizes"]:
        model = make_model(s["arch"], data, seed=s["seed"])
        cosine, distance = GradientCosineRecorder(), DistanceFromInitRecorder()
        _train_checked(run, f"batch{b}", model, data, lr=s["lr"], batch_size=b, steps=s["steps"], seed=s["seed"],
                       evaluate=False, progress=progress, callbacks=[cosine, distance])
        params = model_params(model)
        values = {size: alignment(model, params, data.x_train, data.y_train, size, s["batches"], hessian_x=hx, hessian_y=hy)
                  for size in (*s["batch_sizes"], data.n_train)}
        arrays.update({f"cosine_b{b}": cosine.cosines, f"distance_b{b}": distance.distances,
                       **{f"alignment_trained_b{b}_measured_b{size}": v.numpy() for size, v in values.items()}})
        summary[f"batch {b}"] = dict(mean_cosine=float(np.nanmean(cosine.cosines)), distance=float(distance.distances[-1]),
                                     top_eigenvalue=float(top_eigenvalues(model, params, hx, hy)[0]),
                                     alignment={str(size): float(v.mean()) for size, v in values.items()})
        run.log(f"batch {b}: measured")
    write_atomic(run.file("curvature.npz"), lambda f: np.savez(f, **arrays))
    run.save_final(model)
    return summary


def _trajectory_defaults(preset: Preset) -> dict:
    return dict(arch=preset.mlp_arch, dataset=preset.mlp_dataset, lr=float(preset.trajectory_lrs[-1]),
                batch_size=preset.trajectory_batch_size, weight_decay=float(preset.trajectory_weight_decay),
                epochs=preset.trajectory_epochs, every=preset.trajectory_every, seed=0)


TRAJECTORY_TYPES = dict(arch=str, dataset=str, lr=float, batch_size=int, weight_decay=float, epochs=int, every=int, seed=int)
FIT_POINTS = 3  # snapshots after the first that the power-law fit needs


def _trajectory_prepare(s: dict, download: bool) -> dict:
    _check_positive(s, "epochs", "every")
    data = load_dataset(s["dataset"], download=download)
    model = make_model(s["arch"], data, seed=s["seed"])
    for seed in (s["seed"], s["seed"] + 1):  # the plateau, then the recorded phase
        batch_size = check_train_arguments(model, data, lr=s["lr"], batch_size=s["batch_size"], epochs=s["epochs"],
                                           weight_decay=s["weight_decay"], seed=seed)
    recorded = s["epochs"] * steps_per_epoch(data.n_train, batch_size)
    if recorded // s["every"] < FIT_POINTS:
        raise RunError(f"every={s['every']} leaves {recorded // s['every']} snapshots after the first in the recorded "
                       f"phase's {recorded} updates; the fit needs {FIT_POINTS}: choose every <= {recorded // FIT_POINTS}")
    return dict(data=data, model=model)


def _plateau_weights(run: RunDirectory, s: dict) -> dict:
    """The weights saved at the plateau (``w_N.pt``), refused unless this run's settings wrote them."""
    path = run.file("w_N.pt")
    saved = load_tensors(path, "plateau weights")
    if not isinstance(saved, dict) or set(saved) != {"settings", "model"}:
        raise ValueError(f"plateau weights {str(path)!r} were not written by an sgdlab trajectory run; delete them "
                         "and run the same command to train to the plateau again")
    if saved["settings"] != json.dumps(s, sort_keys=True):
        raise ValueError(f"plateau weights {str(path)!r} were written by another run (settings {saved['settings']}); "
                         "delete them and run the same command to train to the plateau again")
    return saved["model"]


def _trajectory(run: RunDirectory, s: dict, prepared: dict, progress: bool) -> dict:
    data, model = prepared["data"], prepared["model"]
    options = dict(lr=s["lr"], batch_size=s["batch_size"], epochs=s["epochs"], weight_decay=s["weight_decay"],
                   progress=progress)
    if run.file("w_N.pt").exists():
        try:
            model.load_state_dict(_plateau_weights(run, s))
        except RuntimeError as error:
            raise ValueError(f"plateau weights {str(run.file('w_N.pt'))!r} do not fit {s['arch']}: "
                             f"{str(error).splitlines()[-1].strip()}; delete them") from None
        model.to(data.device)
    else:
        _train_checked(run, "to-plateau", model, data, seed=s["seed"], **options)
        save_atomic(dict(settings=json.dumps(s, sort_keys=True), model=model.state_dict()), run.file("w_N.pt"))
    plateau = {name: t.clone() for name, t in model.state_dict().items()}
    # snapshots written before the phase's first checkpoint are recorded again from its start
    fresh_snapshots = not run.file("checkpoint-recorded.pt").exists()
    try:
        recorder = SnapshotRecorder(run.file("snapshots"), every=s["every"], overwrite=fresh_snapshots)
        _train_checked(run, "recorded", model, data, seed=s["seed"] + 1, callbacks=[recorder], **options)
    except DamagedSnapshots as error:  # lost or damaged before the checkpoint: record the phase again from w_N
        run.log(f"{error}; recording the phase again from w_N.pt")
        run.file("checkpoint-recorded.pt").unlink()
        model.load_state_dict(plateau)
        recorder = SnapshotRecorder(run.file("snapshots"), every=s["every"], overwrite=True)
        _train_checked(run, "recorded", model, data, seed=s["seed"] + 1, callbacks=[recorder], **options)
    trajectory = Trajectory(run.file("snapshots"))
    distances = trajectory.distances(0)
    fit = fit_power_law(trajectory.steps[1:], distances[1:])
    run.save_final(model)
    return dict(snapshots=len(trajectory), final_distance=float(distances[-1]), exponent=fit.coefficients[1], r2=fit.r2)


EXPERIMENTS = {
    "walk": Experiment("walk", _walk_defaults, WALK_TYPES, _walk_prepare, _walk, ("walk.npz", "history-walk.json"),
                       dict(arch=ARCHITECTURES, dataset=tuple(DATASETS), bn=BN_MODES)),
    "curvature": Experiment("curvature", _curvature_defaults, CURVATURE_TYPES, _curvature_prepare, _curvature,
                            ("curvature.npz",), dict(arch=ARCHITECTURES, dataset=tuple(DATASETS))),
    "trajectory": Experiment("trajectory", _trajectory_defaults, TRAJECTORY_TYPES, _trajectory_prepare, _trajectory,
                             ("w_N.pt", "snapshots/meta.json", "snapshots/snapshots.bin", "history-recorded.json"),
                             dict(arch=ARCHITECTURES, dataset=tuple(DATASETS))),
}

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
import datetime
import errno
import hashlib
import json
import os
import platform
import shutil
from pathlib import Path

import filelock
import torch

from .callbacks import Diverged
from .devices import default_device
from .experiments import EXPERIMENTS
from .files import TEMPORARY_SUFFIX, append_log, load_tensors, open_existing, write_text_atomic
from .presets import Preset, describe
from .settings import as_settings

LOCK_FILE = ".sgdlab.lock"


class RunError(Exception):
    """A run that cannot start or that ended badly; the message says why (the CLI prints it)."""


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
        append_log(self.path, message)

    def set_status(self, state: str, message: str = "", **extra) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.write_json("status.json", dict(state=state, message=message, **extra, updated=now))


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
        raise RunError(f"{path} holds symbolic links ({', '.join(links)}); a run directory holds none, so that no "
                       f"write "
                       "lands elsewhere: remove them")
    config = run.read_json("config.json")
    if config is None:
        found = [name for name in entries if name != LOCK_FILE]
        if found:
            raise RunError(f"--out {path} is not empty and holds no sgdlab run (found: {', '.join(found[:5])}"
                           f"{', ...' if len(found) > 5 else ''}); nothing was changed: choose a new or empty "
                           f"directory")
        return None
    if config.get("experiment") not in EXPERIMENTS:
        raise RunError(f"{run.file('config.json')} names no sgdlab experiment "
                       f"(experiment={config.get('experiment')!r}); "
                       "nothing was changed: this is not a run directory sgdlab can resume or replace")
    return config


def _refuse_other_settings(run: RunDirectory, stored: dict, experiment, preset: Preset, settings: dict) -> None:
    if (stored.get("experiment"), stored.get("preset"), stored.get("settings")) == (experiment.NAME, preset.name, settings):
        return
    old = dict(experiment=stored.get("experiment"), preset=stored.get("preset"), **(stored.get("settings") or {}))
    new = dict(experiment=experiment.NAME, preset=preset.name, **settings)
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise RunError(f"{run.path} holds another run: "
                   f"{', '.join(f'{k} (stored {old.get(k)!r}, asked {new.get(k)!r})' for k in differ)}; "
                   "use --fresh to start over there, or choose another --out")


def _problems(run: RunDirectory, experiment) -> list[str]:
    """What a finished run lacks: missing result files, or a ``final.pt`` without the recorded fingerprint."""
    status = run.read_json("status.json") or {}
    missing = [name for name in ("final.pt", "summary.json", *experiment.RESULTS) if not run.file(name).exists()]
    problems = [f"{name} is missing" for name in missing]
    if "final.pt" not in missing:
        try:
            if params_sha256(run.file("final.pt")) != status.get("params_sha256"):
                problems.append("final.pt does not have the fingerprint recorded when the run finished")
        except ValueError as error:
            problems.append(str(error).split("; sgdlab")[0])
    return problems


def _finished_and_intact(run: RunDirectory, experiment) -> bool:
    return (run.read_json("status.json") or {}).get("state") == "finished" and not _problems(run, experiment)


def _make_directories(path: Path) -> list[Path]:
    """Create ``path`` and missing parents; return those created (deepest last)."""
    created = [p for p in (path, *path.parents) if not os.path.lexists(p)][::-1]
    try:
        for folder in created:
            folder.mkdir()
    except OSError as error:
        _remove_created(created)
        raise RunError(f"--out {path} cannot be created ({error.strerror}: {error.filename}); choose a writable "
                       f"directory") from None
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


def _prepare(experiment, config, download: bool):
    """The experiment's data, with every setting checked; nothing is written."""
    try:
        return experiment.prepare(config, download=download)
    except (ValueError, FileNotFoundError) as error:
        raise RunError(str(error)) from None


def start(experiment, preset: Preset, config, out: str | Path, *, fresh: bool = False,
          download: bool = False, progress: bool = True) -> dict:
    """Run (or resume) ``experiment`` (a module of :mod:`sgdlab.experiments`) with ``config`` (its
    ``Config``; ``preset`` is recorded) into ``out``; return what :func:`show` returns."""
    run = RunDirectory(out)
    settings = as_settings(config)
    stored = _inspect(run)
    if stored is not None and not fresh:
        _refuse_other_settings(run, stored, experiment, preset, settings)
    if stored is not None and not fresh and _finished_and_intact(run, experiment):
        with _lock(run):
            run.log("asked again: the run is finished, nothing recomputed")
        return show(run.path)
    data = _prepare(experiment, config, download)
    stored_config = dict(experiment=experiment.NAME, preset=preset.name, settings=settings, describe=describe(preset),
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
        return _run_locked(run, experiment, config, data, stored_config, stored, fresh, progress)


def _run_locked(run, experiment, config, data, stored_config, stored, fresh, progress) -> dict:
    recorded = None  # the fingerprint of a finished run that is being restored
    try:
        if fresh and stored is not None:
            _empty(run)
        _remove_temporaries(run)
        if stored is None or fresh:
            run.write_json("config.json", stored_config)
            run.log(f"start {experiment.NAME} with {json.dumps(stored_config['settings'])}")
        else:
            status = run.read_json("status.json") or {}
            if status.get("state") == "finished":
                recorded = status.get("params_sha256")
                run.log(f"finished, but {'; '.join(_problems(run, experiment))}: restoring from the checkpoints")
            else:
                run.log("resume")
        run.set_status("running")
        result = experiment.run(config, out=run.path, progress=progress, data=data)
        fingerprint = params_sha256(run.file("final.pt"))
        if recorded is not None and fingerprint != recorded:
            raise RunError(f"the restored final parameters have fingerprint {fingerprint}, not the {recorded} recorded "
                           "when the run finished: the checkpoints changed; start over with --fresh")
        run.write_json("summary.json", result.summary())
        run.set_status("finished", params_sha256=fingerprint)
        run.log("finished")
    except RunError as error:
        _record_end(run, "failed", str(error))
        raise
    except Diverged as error:
        _record_end(run, "diverged", str(error))
        raise RunError(str(error)) from None
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
        raise RunError(f"{run.file('config.json')} names no sgdlab experiment "
                       f"(experiment={config.get('experiment')!r})")
    status = run.read_json("status.json")
    finished = (status or {}).get("state") == "finished"
    problems = _problems(run, experiment) if finished else []
    fingerprint = None
    if run.file("final.pt").exists() and not any(p.startswith("final parameters") for p in problems):
        with contextlib.suppress(ValueError):
            fingerprint = params_sha256(run.file("final.pt"))
    return dict(directory=str(run.path), config=config, status=status, summary=run.read_json("summary.json"),
                params_sha256=fingerprint, problems=problems)

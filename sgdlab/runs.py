"""Run directories: long experiments that survive being killed, and what they leave behind.

An experiment (``walk``, ``curvature``, ``trajectory``) runs into a directory that holds

* ``config.json``  the experiment, its settings, the versions and the device;
* ``status.json``  ``running``, ``finished``, ``diverged`` or ``failed``, with a message;
* ``log.txt``      one line per event (start, resume, each part done, the end);
* ``*.pt``         checkpoints written by :func:`sgdlab.train` (atomically; ``weights_only``);
* the results      (``walk.npz``, ``curvature.npz``, ``snapshots/``, ``history*.json``,
                   ``summary.json``) and ``final.pt``, the final parameters, whose SHA-256 is the
                   run's fingerprint (``params_sha256``): a resumed run must end with the same one.

Starting an experiment in a directory that holds an unfinished run of the same settings
resumes it; a finished one is not recomputed; other settings are refused, naming the keys
that differ (``fresh=True`` starts over). Settings are validated before anything is written.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import platform
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .curvature import GradientCosineRecorder, alignment, top_eigenvalues
from .data import DATASETS, load_dataset
from .landscape import BN_MODES, record_walk
from .models import ARCHITECTURES, make_model
from .params import model_params
from .presets import Preset, default_device, describe
from .train import save_atomic, train
from .trajectory import DistanceFromInitRecorder, SnapshotRecorder, Trajectory, fit_power_law


class RunError(Exception):
    """A run that cannot start or that ended badly; the message says why (the CLI prints it)."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    defaults: Callable[[Preset], dict]   # settings and their default values, from a preset
    run: Callable[["RunDirectory", dict, bool, bool], dict]  # (directory, settings, download, progress) -> summary
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
        path = self.file(name)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise RunError(f"{path} is not valid JSON ({error}); the run directory is damaged") from None

    def write_json(self, name: str, value: dict) -> None:
        partial = self.file(name + ".partial")
        partial.write_text(json.dumps(value, indent=1))
        partial.replace(self.file(name))

    def log(self, message: str) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with open(self.file("log.txt"), "a") as f:
            f.write(f"{stamp} {message}\n")

    def set_status(self, state: str, message: str = "") -> None:
        self.write_json("status.json", dict(state=state, message=message,
                                            updated=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")))

    def save_final(self, model: torch.nn.Module) -> str:
        save_atomic(model.state_dict(), self.file("final.pt"))
        return params_sha256(self.file("final.pt"))


def params_sha256(path: str | Path) -> str:
    """SHA-256 of a saved state dict's tensors (names, shapes, dtypes and bytes, in key order)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for name, tensor in state.items():
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------

def parse_settings(experiment: Experiment, preset: Preset, assignments: list[str]) -> dict:
    """The experiment's defaults from ``preset``, with ``key=value`` assignments applied and checked.

    Values are read as JSON when they parse (``0.1``, ``[1, 10]``, ``null``), else as text;
    ``a,b,c`` gives a list where the default is a list. Each value must have its default's type.
    """
    settings = experiment.defaults(preset)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RunError(f"--set {assignment!r}: expected key=value, e.g. --set lr=0.05")
        if key not in settings:
            raise RunError(f"--set {key}: not a setting of {experiment.name}; allowed: {', '.join(sorted(settings))}")
        settings[key] = _coerce(key, text, settings[key])
    for key, allowed in experiment.choices.items():
        if settings[key] not in allowed:
            raise RunError(f"{key}={settings[key]!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")
    return settings


def _coerce(key: str, text: str, default):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if isinstance(default, list):
        if isinstance(value, str):
            value = [json.loads(v) if v.strip().lstrip("-").replace(".", "", 1).isdigit() else v.strip()
                     for v in value.split(",") if v.strip()]
        elif not isinstance(value, list):
            value = [value]
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise RunError(f"--set {key}={text!r}: expected a list of positive integers, e.g. {key}=1,10,25")
        return value
    if value is None:
        return None
    if isinstance(default, bool) or (default is None and isinstance(value, bool)):
        if not isinstance(value, bool):
            raise RunError(f"--set {key}={text!r}: expected true or false")
        return value
    if isinstance(default, int) or (default is None and isinstance(value, int)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise RunError(f"--set {key}={text!r}: expected a positive integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value != value:
            raise RunError(f"--set {key}={text!r}: expected a non-negative number")
        return float(value)
    if not isinstance(value, str):
        raise RunError(f"--set {key}={text!r}: expected text")
    return value


# ---------------------------------------------------------------------------------------
# Starting, resuming, showing
# ---------------------------------------------------------------------------------------

def start(experiment: Experiment, preset: Preset, settings: dict, out: str | Path, *, fresh: bool = False,
          download: bool = False, progress: bool = True) -> dict:
    """Run (or resume) ``experiment`` into ``out``; return what :func:`show` returns."""
    run = RunDirectory(out)
    if run.path.exists() and not run.path.is_dir():
        raise RunError(f"--out {run.path} is a file, not a directory")
    config = dict(experiment=experiment.name, preset=preset.name, settings=settings)
    stored = run.read_json("config.json")
    if stored is not None and not fresh:
        if (stored.get("experiment"), stored.get("preset"), stored.get("settings")) != (experiment.name, preset.name, settings):
            old = dict(experiment=stored.get("experiment"), preset=stored.get("preset"), **(stored.get("settings") or {}))
            new = dict(experiment=experiment.name, preset=preset.name, **settings)
            differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise RunError(f"{run.path} holds another run: {', '.join(f'{k} (stored {old.get(k)!r}, asked {new.get(k)!r})' for k in differ)}; "
                           "use --fresh to start over there, or choose another --out")
        status = run.read_json("status.json") or {}
        if status.get("state") == "finished":
            run.log("asked again: the run is finished, nothing recomputed")
            return show(run.path)
    if fresh and run.path.exists():
        shutil.rmtree(run.path)
    created = not run.path.exists()
    run.path.mkdir(parents=True, exist_ok=True)
    if stored is None or fresh:
        run.write_json("config.json", dict(config, describe=describe(preset), python=platform.python_version(),
                                           torch=torch.__version__, device=str(default_device())))
        run.log(f"start {experiment.name} with {json.dumps(settings)}")
    else:
        run.log("resume")
    run.set_status("running")
    try:
        summary = experiment.run(run, settings, download, progress)
    except RunError as error:
        run.set_status("diverged" if "diverged" in str(error) else "failed", str(error))
        run.log(f"stopped: {error}")
        raise
    except (ValueError, FileNotFoundError) as error:
        if created and not any(run.path.glob("*.pt")):  # refused before computing anything: leave nothing behind
            shutil.rmtree(run.path)
        else:
            run.set_status("failed", f"{type(error).__name__}: {error}")
        raise RunError(str(error)) from None
    except BaseException as error:
        run.set_status("failed", f"{type(error).__name__}: {error}; run the same command to resume")
        run.log(f"interrupted: {type(error).__name__}: {error}")
        raise
    run.write_json("summary.json", summary)
    run.set_status("finished")
    run.log("finished")
    return show(run.path)


def show(path: str | Path) -> dict:
    """The run's configuration, status, summary and ``params_sha256`` (``None`` while unfinished)."""
    run = RunDirectory(path)
    config = run.read_json("config.json")
    if config is None:
        raise RunError(f"{run.path} holds no run (no config.json)")
    final = run.file("final.pt")
    return dict(directory=str(run.path), config=config, status=run.read_json("status.json"),
                summary=run.read_json("summary.json"),
                params_sha256=params_sha256(final) if final.exists() else None)


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


def _walk(run: RunDirectory, s: dict, download: bool, progress: bool) -> dict:
    data = load_dataset(s["dataset"], download=download)
    model = make_model(s["arch"], data, seed=s["seed"])
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


def _curvature(run: RunDirectory, s: dict, download: bool, progress: bool) -> dict:
    data = load_dataset(s["dataset"], download=download)
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
    np.savez(run.file("curvature.npz"), **arrays)
    run.save_final(model)
    return summary


def _trajectory_defaults(preset: Preset) -> dict:
    return dict(arch=preset.mlp_arch, dataset=preset.mlp_dataset, lr=float(preset.trajectory_lrs[-1]),
                batch_size=preset.trajectory_batch_size, weight_decay=float(preset.trajectory_weight_decay),
                epochs=preset.trajectory_epochs, every=preset.trajectory_every, seed=0)


def _trajectory(run: RunDirectory, s: dict, download: bool, progress: bool) -> dict:
    data = load_dataset(s["dataset"], download=download)
    model = make_model(s["arch"], data, seed=s["seed"])
    options = dict(lr=s["lr"], batch_size=s["batch_size"], epochs=s["epochs"], weight_decay=s["weight_decay"],
                   progress=progress)
    if run.file("w_N.pt").exists():
        model.load_state_dict(torch.load(run.file("w_N.pt"), map_location="cpu", weights_only=True))
        model.to(data.device)
    else:
        _train_checked(run, "to-plateau", model, data, seed=s["seed"], **options)
        save_atomic(model.state_dict(), run.file("w_N.pt"))
    # snapshots written before the phase's first checkpoint are recorded again from its start
    fresh_snapshots = not run.file("checkpoint-recorded.pt").exists()
    _train_checked(run, "recorded", model, data, seed=s["seed"] + 1,
                   callbacks=[SnapshotRecorder(run.file("snapshots"), every=s["every"], overwrite=fresh_snapshots)], **options)
    trajectory = Trajectory(run.file("snapshots"))
    distances = trajectory.distances(0)
    fit = fit_power_law(trajectory.steps[1:], distances[1:])
    run.save_final(model)
    return dict(snapshots=len(trajectory), final_distance=float(distances[-1]), exponent=fit.coefficients[1], r2=fit.r2)


EXPERIMENTS = {
    "walk": Experiment("walk", _walk_defaults, _walk,
                       dict(arch=ARCHITECTURES, dataset=tuple(DATASETS), bn=BN_MODES)),
    "curvature": Experiment("curvature", _curvature_defaults, _curvature, dict(arch=ARCHITECTURES, dataset=tuple(DATASETS))),
    "trajectory": Experiment("trajectory", _trajectory_defaults, _trajectory, dict(arch=ARCHITECTURES, dataset=tuple(DATASETS))),
}

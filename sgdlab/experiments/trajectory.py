"""After SGD stops improving: the distance travelled on the loss's plateau, as the command line runs it.

Trains with a constant learning rate until the loss is flat (the plateau, ``w_N``), then as
long again while snapshots of the weights are written every ``every`` updates
(:class:`sgdlab.trajectory.SnapshotRecorder`), and fits a power law to the distance from
the first snapshot.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from ..data import DATASETS, Dataset, steps_per_epoch
from ..files import append_log, load_tensors, write_atomic
from ..models import ARCHITECTURES, make_model
from ..settings import as_settings
from ..train import check_train_arguments, save_atomic
from ..trajectory import DamagedSnapshots, LawFit, SnapshotRecorder, Trajectory, fit_power_law
from .common import checked_data, state_of, train_part

NAME = "trajectory"
CHOICES = dict(arch=ARCHITECTURES, dataset=tuple(DATASETS))
RESULTS = ("w_N.pt", "snapshots/meta.json", "snapshots/snapshots.bin", "history-recorded.json")
FIT_POINTS = 3  # snapshots after the first that the power-law fit needs


@dataclasses.dataclass(frozen=True)
class Config:
    """The trajectory experiment's settings; the defaults are the ``quick`` preset's."""

    arch: str = "mlp"             # architecture (sgdlab.models.ARCHITECTURES)
    dataset: str = "digits"       # training set (sgdlab.data.DATASETS)
    lr: float = 0.2               # SGD's constant learning rate
    batch_size: int = 10          # mini-batch size
    weight_decay: float = 1e-3    # gives SGD a stationary regime (a loss that stops improving)
    epochs: int = 20              # epochs until the loss is flat, then as many recorded
    every: int = 27               # updates between snapshots
    seed: int = 0                 # initialisation and the plateau's data order (seed + 1: the recorded phase's)


@dataclasses.dataclass
class Result:
    """``steps`` of the snapshots (updates into the recorded phase), their ``distances`` from the
    first (L2 over all parameters), the power law fitted to them after the first (least squares on the
    log distances, and its R² scored there), and the final parameters."""

    steps: np.ndarray
    distances: np.ndarray
    params: dict

    @property
    def fit(self) -> LawFit:
        return fit_power_law(self.steps[1:], self.distances[1:], space="log")

    def summary(self) -> dict:
        fit = self.fit
        return dict(snapshots=len(self.steps), final_distance=float(self.distances[-1]),
                    exponent=fit.coefficients[1], r2=fit.r2)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        write_atomic(directory / "distances.npz", lambda f: np.savez(f, steps=self.steps, distances=self.distances))
        save_atomic(self.params, directory / "final.pt")

    @classmethod
    def load(cls, directory: str | Path) -> "Result":
        directory = Path(directory)
        with np.load(directory / "distances.npz", allow_pickle=False) as saved:
            steps, distances = saved["steps"], saved["distances"]
        return cls(steps, distances, load_tensors(directory / "final.pt", "final parameters"))


def prepare(config: Config, *, data: Dataset | None = None, download: bool = False) -> Dataset:
    """The training set, once every setting of ``config`` is checked; writes nothing."""
    data = checked_data(config, CHOICES, ("epochs", "every"), data, download)
    model = make_model(config.arch, data, seed=config.seed)
    for seed in (config.seed, config.seed + 1):  # the plateau, then the recorded phase
        batch_size = check_train_arguments(model, data, lr=config.lr, batch_size=config.batch_size,
                                           epochs=config.epochs, weight_decay=config.weight_decay, seed=seed)
    recorded = config.epochs * steps_per_epoch(data.n_train, batch_size)
    if recorded // config.every < FIT_POINTS:
        raise ValueError(f"every={config.every} leaves {recorded // config.every} snapshots after the first in the "
                         f"recorded phase's {recorded} updates; the fit needs {FIT_POINTS}: "
                         f"choose every <= {recorded // FIT_POINTS}")
    return data


def _plateau_weights(path: Path, settings: str) -> dict:
    """The weights saved at the plateau (``w_N.pt``), refused unless a run of these settings wrote them."""
    saved = load_tensors(path, "plateau weights")
    if not isinstance(saved, dict) or set(saved) != {"settings", "model"}:
        raise ValueError(f"plateau weights {str(path)!r} were not written by an sgdlab trajectory run; delete them "
                         "and run the same command to train to the plateau again")
    if saved["settings"] != settings:
        raise ValueError(f"plateau weights {str(path)!r} were written by another run (settings {saved['settings']}); "
                         "delete them and run the same command to train to the plateau again")
    return saved["model"]


def run(config: Config, *, out: str | Path | None = None, progress: bool | None = None, data: Dataset | None = None,
        download: bool = False) -> Result:
    """Train to the plateau, then record the phase after it. With ``out`` the plateau's weights
    (``w_N.pt``), the checkpoints and the snapshots stay there and a killed run resumes; without,
    the snapshots live in a temporary directory."""
    data = prepare(config, data=data, download=download)
    if out is None:
        with tempfile.TemporaryDirectory() as scratch:
            return _run(config, None, Path(scratch), progress, data)
    return _run(config, Path(out), Path(out), progress, data)


def _run(config: Config, out: Path | None, where: Path, progress, data: Dataset) -> Result:
    model = make_model(config.arch, data, seed=config.seed)
    options = dict(lr=config.lr, batch_size=config.batch_size, epochs=config.epochs, weight_decay=config.weight_decay,
                   progress=progress)
    settings = json.dumps(as_settings(config), sort_keys=True)
    plateau_file = where / "w_N.pt"
    if out is not None and plateau_file.exists():
        try:
            model.load_state_dict(_plateau_weights(plateau_file, settings))
        except RuntimeError as error:
            raise ValueError(f"plateau weights {str(plateau_file)!r} do not fit {config.arch}: "
                             f"{str(error).splitlines()[-1].strip()}; delete them") from None
        model.to(data.device)
    else:
        train_part(out, "to-plateau", model, data, seed=config.seed, **options)
        if out is not None:
            save_atomic(dict(settings=settings, model=model.state_dict()), plateau_file)
    plateau = {name: t.clone() for name, t in model.state_dict().items()}
    # snapshots written before the phase's first checkpoint are recorded again from its start
    fresh_snapshots = out is None or not (out / "checkpoint-recorded.pt").exists()
    try:
        recorder = SnapshotRecorder(where / "snapshots", every=config.every, overwrite=fresh_snapshots)
        train_part(out, "recorded", model, data, seed=config.seed + 1, callbacks=[recorder], **options)
    except DamagedSnapshots as error:  # lost or damaged before the checkpoint: record the phase again from w_N
        append_log(where, f"{error}; recording the phase again from w_N.pt")
        (where / "checkpoint-recorded.pt").unlink()
        model.load_state_dict(plateau)
        recorder = SnapshotRecorder(where / "snapshots", every=config.every, overwrite=True)
        train_part(out, "recorded", model, data, seed=config.seed + 1, callbacks=[recorder], **options)
    trajectory = Trajectory(where / "snapshots")
    result = Result(trajectory.steps, trajectory.distances(0), state_of(model))
    if out is not None:
        result.save(out)
    return result

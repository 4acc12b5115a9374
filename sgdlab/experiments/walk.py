"""The walk of SGD ("A Walk with SGD", section 3): the loss between consecutive iterates.

Trains a network with constant-rate SGD and records, at every step of the chosen epochs, the
full-set loss on the line from one iterate to the next (:class:`sgdlab.walk.WalkRecorder`).
``book/walk.ipynb`` and ``python -m sgdlab run walk`` both call :func:`run`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .. import plots
from ..callbacks import History, check_not_diverged
from ..data import DATASETS, Dataset
from ..files import load_tensors
from ..models import ARCHITECTURES, make_model
from ..params import BN_MODES
from ..train import check_train_arguments, save_atomic
from ..walk import WalkRecorder, WalkResult, check_eval_examples, record_walk
from .common import CHECKPOINT_EVERY, checked_data, state_of

NAME = "walk"
CHOICES = dict(arch=ARCHITECTURES, dataset=tuple(DATASETS), bn=BN_MODES)
RESULTS = ("walk.npz", "history-walk.json")


@dataclasses.dataclass(frozen=True)
class Config:
    """The walk's settings; the defaults are the ``quick`` preset's fully connected walk."""

    arch: str = "mlp"                      # architecture (sgdlab.models.ARCHITECTURES)
    dataset: str = "digits"                # training set (sgdlab.data.DATASETS)
    epochs: tuple[int, ...] = (1, 5, 10)   # epochs whose every step is interpolated, counted from 1
    train_epochs: int | None = None        # epochs trained (None: until the last recorded one)
    steps: int | None = None               # record only each recorded epoch's first steps (None: all)
    eval_examples: int | None = None       # the loss over the first training examples only (None: all)
    lr: float = 0.1                        # SGD's constant learning rate
    batch_size: int = 10                   # mini-batch size (the paper: 100)
    weight_decay: float = 0.0              # L2 weight decay of SGD (the paper's code: 1e-4)
    bn: str = "batch"                      # BatchNorm on the line: "batch" (each point's own statistics, the
                                           # authors' choice) or "eval" (running statistics interpolated)
    seed: int = 0                          # initialisation and data order


@dataclasses.dataclass
class Result:
    """The recorded walk (:class:`sgdlab.walk.WalkResult`), the training history and the final parameters."""

    walk: WalkResult
    history: History
    params: dict  # the trained model's state dict (parameters and buffers)

    def summary(self) -> dict:
        """The census (one row per recorded epoch, see :meth:`sgdlab.walk.WalkResult.census`), as JSON values."""
        return dict(census=[{k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}
                            for row in self.walk.census()])

    def save(self, directory: str | Path) -> None:
        """``walk.npz``, ``history-walk.json`` and ``final.pt`` in ``directory`` (each written atomically)."""
        directory = Path(directory)
        self.walk.save(directory / "walk.npz")
        self.history.save(directory / "history-walk.json")
        save_atomic(self.params, directory / "final.pt")

    @classmethod
    def load(cls, directory: str | Path) -> "Result":
        directory = Path(directory)
        return cls(WalkResult.load(directory / "walk.npz"), History.load(directory / "history-walk.json"),
                   load_tensors(directory / "final.pt", "final parameters"))

    def plot(self, epoch: int | None = None, **options):
        """The loss between consecutive iterates of one recorded epoch (:func:`sgdlab.plots.plot_walk`)."""
        return plots.plot_walk(self.walk, epoch, **options)

    def census_table(self, **options):
        """The census as a table (:func:`sgdlab.plots.census_table`)."""
        return plots.census_table(self.walk, **options)


def prepare(config: Config, *, data: Dataset | None = None, download: bool = False) -> Dataset:
    """The training set, once every setting of ``config`` is checked; writes nothing."""
    data = checked_data(config, CHOICES, ("epochs", "train_epochs", "steps"), data, download)
    WalkRecorder(config.epochs, steps=config.steps, bn=config.bn)  # its constructor checks epochs, steps and bn
    check_eval_examples(config.eval_examples, data)
    model = make_model(config.arch, data, seed=config.seed)
    check_train_arguments(model, data, lr=config.lr, batch_size=config.batch_size, weight_decay=config.weight_decay,
                          seed=config.seed, epochs=max(max(config.epochs), config.train_epochs or 0))
    return data


def run(config: Config, *, out: str | Path | None = None, progress: bool | None = None, data: Dataset | None = None,
        download: bool = False) -> Result:
    """Train and record the walk of ``config``; raise :class:`sgdlab.callbacks.Diverged` if training diverged.

    With ``out`` (an existing directory) the run checkpoints there (``checkpoint-walk.pt``, and
    ``walk.npz`` after each recorded epoch), resumes from what it finds, and ends by saving the
    :class:`Result` there. ``progress``: see :func:`sgdlab.train`.
    """
    data = prepare(config, data=data, download=download)
    model = make_model(config.arch, data, seed=config.seed)
    files = {}
    if out is not None:
        out = Path(out)
        files = dict(checkpoint=out / "checkpoint-walk.pt", checkpoint_every=CHECKPOINT_EVERY, save_to=out / "walk.npz")
    history, walk = record_walk(
        model, data, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, steps=config.steps,
        eval_examples=config.eval_examples, train_epochs=config.train_epochs, bn=config.bn,
        weight_decay=config.weight_decay, seed=config.seed, progress=progress, **files)
    if out is not None:
        history.save(out / "history-walk.json")
    check_not_diverged(history)
    result = Result(walk, history, state_of(model))
    if out is not None:
        result.save(out)
    return result

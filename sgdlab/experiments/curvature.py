"""Curvature and batch size ("A Walk with SGD", section 4), as the command line runs it.

For each mini-batch size, trains the same initialisation for the same number of updates,
recording the cosine of consecutive mini-batch gradients and the distance from
initialisation, then measures at the end the alignment g^T H g / ||g||^2 of mini-batch
gradients of every size with the Hessian, and the top Hessian eigenvalue.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..hessian import alignment, top_eigenvalues
from ..data import DATASETS, Dataset
from ..files import append_log, load_tensors, write_atomic
from ..models import ARCHITECTURES, make_model
from ..params import model_params
from ..train import check_train_arguments, save_atomic
from ..recorders import DistanceFromInitRecorder, GradientCosineRecorder
from .common import checked_data, state_of, train_part

NAME = "curvature"
CHOICES = dict(arch=ARCHITECTURES, dataset=tuple(DATASETS))
RESULTS = ("curvature.npz",)


@dataclasses.dataclass(frozen=True)
class Config:
    """The curvature experiment's settings; the defaults are the ``quick`` preset's."""

    arch: str = "mlp"                              # architecture (sgdlab.models.ARCHITECTURES)
    dataset: str = "digits"                        # training set (sgdlab.data.DATASETS)
    lr: float = 0.5                                # one learning rate for every batch size, as in the paper
    batch_sizes: tuple[int, ...] = (10, 100, 1000)  # mini-batch sizes compared (alignment adds the whole set)
    steps: int = 500                               # updates per run (equal iterations for every batch size)
    batches: int = 50                              # sampled mini-batches per alignment estimate (the paper: 50)
    hessian_examples: int | None = None            # Hessian over the first examples only (None: the whole set)
    seed: int = 0                                  # initialisation and data order of every run
    # the chapter only (book/curvature.ipynb); the command line trains `seed` alone:
    seeds: int = 5                                 # runs (seeds 0, 1, ...) per batch size for cosine and distance
    control_steps: int = 2500                      # updates of the lr / 5 control run of the sharpness section


@dataclasses.dataclass
class Result:
    """Per trained batch size ``b``: ``cosine_b{b}``, ``distance_b{b}`` (per step),
    ``alignment_trained_b{b}_measured_b{size}`` (per sampled batch) and ``top_eigenvalue_b{b}``."""

    batch_sizes: list
    arrays: dict
    params: dict  # the state dict of the last batch size's model

    def summary(self) -> dict:
        summary = dict(batch_sizes=list(self.batch_sizes))
        for b in self.batch_sizes:
            prefix = f"alignment_trained_b{b}_measured_b"
            summary[f"batch {b}"] = dict(
                mean_cosine=float(np.nanmean(self.arrays[f"cosine_b{b}"])),
                distance=float(self.arrays[f"distance_b{b}"][-1]),
                top_eigenvalue=float(self.arrays[f"top_eigenvalue_b{b}"]),
                alignment={key[len(prefix):]: float(v.mean()) for key, v in self.arrays.items() if key.startswith(prefix)})
        return summary

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        write_atomic(directory / "curvature.npz",
                     lambda f: np.savez(f, batch_sizes=np.asarray(self.batch_sizes), **self.arrays))
        save_atomic(self.params, directory / "final.pt")

    @classmethod
    def load(cls, directory: str | Path) -> "Result":
        directory = Path(directory)
        with np.load(directory / "curvature.npz", allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files if key != "batch_sizes"}
            batch_sizes = saved["batch_sizes"].tolist()
        return cls(batch_sizes, arrays, load_tensors(directory / "final.pt", "final parameters"))


def prepare(config: Config, *, data: Dataset | None = None, download: bool = False) -> Dataset:
    """The training set, once every setting of ``config`` is checked; writes nothing."""
    data = checked_data(config, CHOICES, ("batch_sizes", "steps", "batches", "hessian_examples"), data, download)
    model = make_model(config.arch, data, seed=config.seed)
    for b in config.batch_sizes:
        check_train_arguments(model, data, lr=config.lr, batch_size=b, steps=config.steps, seed=config.seed)
    return data


def run(config: Config, *, out: str | Path | None = None, progress: bool | None = None, data: Dataset | None = None,
        download: bool = False) -> Result:
    """Train once per batch size and measure; with ``out`` each run checkpoints there and resumes
    (``checkpoint-batch<b>.pt``), and the :class:`Result` is saved there."""
    data = prepare(config, data=data, download=download)
    out = Path(out) if out is not None else None
    keep = slice(0, config.hessian_examples)
    hx, hy = data.x_train[keep], data.y_train[keep]
    arrays = {}
    for b in config.batch_sizes:
        model = make_model(config.arch, data, seed=config.seed)
        cosine, distance = GradientCosineRecorder(), DistanceFromInitRecorder()
        train_part(out, f"batch{b}", model, data, lr=config.lr, batch_size=b, steps=config.steps, seed=config.seed,
                   evaluate=False, progress=progress, callbacks=[cosine, distance])
        params = model_params(model)
        for size in (*config.batch_sizes, data.n_train):
            arrays[f"alignment_trained_b{b}_measured_b{size}"] = alignment(
                model, params, data.x_train, data.y_train, size, config.batches, hessian_x=hx, hessian_y=hy).numpy()
        arrays.update({f"cosine_b{b}": cosine.cosines, f"distance_b{b}": distance.distances,
                       f"top_eigenvalue_b{b}": np.asarray(top_eigenvalues(model, params, hx, hy)[0])})
        if out is not None:
            append_log(out, f"batch {b}: measured")
    result = Result(list(config.batch_sizes), arrays, state_of(model))
    if out is not None:
        result.save(out)
    return result

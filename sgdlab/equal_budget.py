"""SGD against GD at an equal budget: the price of a step, a rate tuned per method, routes.

A fair comparison gives each method its own learning rate, tuned on the same grid by the same
criterion (the lowest mean final training loss over seeds), and the same budget: the same
number of examples processed (equal compute) or the same wall-clock time, converted into
steps with the measured time of one step (:func:`seconds_per_step`). Seeds are trained
together with :func:`sgdlab.seeds.train_seeds`. The routes of two runs are compared in the plane
of the two principal directions of their weight snapshots (:func:`principal_routes`).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import numpy as np
import torch

from .models import make_model
from .params import loss_and_accuracy
from .seeds import train_one_by_one, train_seeds


def seconds_per_step(arch: str, dataset, batch_sizes: Sequence, *, lr: float, steps: int = 100,
                     warmup: int = 20, seed: int = 0) -> dict:
    """Wall-clock seconds per SGD step of ``make_model(arch, dataset, seed=seed)``, for each
    mini-batch size in ``batch_sizes`` (an int, or ``dataset.n_train`` for a full batch):
    a run of ``steps`` steps without evaluation, timed by :func:`sgdlab.train` (its
    ``History.seconds``), after an untimed warm-up run of ``warmup`` steps. Returns
    ``{B: seconds}``. Depends on the machine and its load."""
    per_step = {}
    for B in batch_sizes:
        timing = dict(lr=lr, batch_size=B, evaluate=False)
        train_one_by_one(arch, dataset, [seed], steps=warmup, **timing)
        per_step[B] = train_one_by_one(arch, dataset, [seed], steps=steps, **timing)[0].seconds / steps
    return per_step


def final_loss_and_error(arch: str, dataset, result) -> np.ndarray:
    """Shape (seeds, 2): each seed's final training loss (nats, mean over the training set)
    and test error (a fraction), at the parameters of ``result`` (a
    :class:`sgdlab.seeds.SeedsResult` of ``arch`` on ``dataset``), BatchNorm in eval mode. A
    diverged seed gives its last parameters' values (possibly nan)."""
    net = make_model(arch, dataset, seed=0)   # the architecture only: params_of supplies the weights
    rows = []
    for i in range(len(result.seeds)):
        p = result.params_of(i)
        loss, _ = loss_and_accuracy(net, p, dataset.x_train, dataset.y_train)
        _, accuracy = loss_and_accuracy(net, p, dataset.x_test, dataset.y_test)
        rows.append((loss, 1 - accuracy))
    return np.array(rows)


@dataclasses.dataclass
class RateTuning:
    """What :func:`tune_each` returns. ``final[label, lr]``: :func:`final_loss_and_error` of
    budget ``label`` at rate ``lr``, shape (seeds, 2); ``mean_loss[label, lr]``: its mean
    final training loss (nats; ``inf`` when a seed diverged to nan); ``tuned[label]``: the
    rate of ``lrs`` with the lowest mean loss (ties: the first in ``lrs``)."""

    lrs: tuple
    final: dict
    mean_loss: dict
    tuned: dict


def tune_each(arch: str, dataset, seeds: Sequence[int], lrs: Sequence[float], budgets: dict) -> RateTuning:
    """Tunes the learning rate of each budget separately. ``budgets``: ``{label: (batch_size,
    epochs)}``, ``batch_size`` an int or ``"full"`` (GD: one step per epoch). Every rate of
    ``lrs`` is trained on every seed (:func:`sgdlab.seeds.train_seeds`, constant rate, no
    evaluation during training); a diverged seed stops without a warning."""
    final = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a diverged seed stops
        for label, (batch, length) in budgets.items():
            for lr in lrs:
                final[label, lr] = final_loss_and_error(arch, dataset, train_seeds(
                    arch, dataset, list(seeds), lr=lr, batch_size=batch, epochs=length, evaluate=False))
    mean_loss = {key: np.nan_to_num(v[:, 0].mean(), nan=np.inf) for key, v in final.items()}
    tuned = {label: min(lrs, key=lambda lr: mean_loss[label, lr]) for label in budgets}
    return RateTuning(lrs=tuple(lrs), final=final, mean_loss=mean_loss, tuned=tuned)


@dataclasses.dataclass
class PrincipalRoutes:
    """What :func:`principal_routes` returns. ``projected[label]``: shape (snapshots, 1, 2),
    the route's coordinates along the two principal directions (parameter units; the middle
    axis is one start, as :func:`sgdlab.plots.plot_toy_paths` takes paths); ``explained``:
    the share of the snapshots' variance those two directions hold; ``moved[label]``: the
    displacement from the first snapshot to the last, shape (P,); ``same_way``: the cosine
    between the first two routes' displacements."""

    projected: dict
    explained: float
    moved: dict
    same_way: float


def principal_routes(snapshots: dict) -> PrincipalRoutes:
    """Projects routes on their top two principal directions. ``snapshots``: ``{label:
    tensor of shape (snapshots, P)}``, at least two routes; the directions come from an SVD
    of all the snapshots together, centred on their mean."""
    if len(snapshots) < 2:
        raise ValueError(f"snapshots must hold at least two routes, got {list(snapshots)}")
    stacked = torch.cat(list(snapshots.values()))
    centre = stacked.mean(0)
    _, singular, directions = torch.linalg.svd(stacked - centre, full_matrices=False)
    explained = ((singular[:2] ** 2).sum() / (singular ** 2).sum()).item()
    projected = {label: ((points - centre) @ directions[:2].T)[:, None, :] for label, points in snapshots.items()}
    moved = {label: points[-1] - points[0] for label, points in snapshots.items()}
    first, second = list(moved.values())[:2]
    same_way = torch.nn.functional.cosine_similarity(first, second, dim=0).item()
    return PrincipalRoutes(projected=projected, explained=explained, moved=moved, same_way=same_way)

"""Past the plateau: a network trained until its loss stops improving (``w_N``), then as long again (``w_M``).

The two phases of the trajectory chapter, in memory: :func:`train_past_plateau` trains
``epochs`` epochs with data-order seed ``seed`` (the plateau), keeps a copy of the weights,
and trains ``epochs`` more with seed ``seed + 1``, optionally writing snapshots
(:class:`sgdlab.trajectory.SnapshotRecorder`). :mod:`sgdlab.experiments.trajectory` runs the
same two phases from the command line, resumable, with the plateau's weights on disk.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .data import Dataset
from .params import clone_params, model_params
from .train import train
from .trajectory import SnapshotRecorder, Trajectory


def train_past_plateau(model: nn.Module, data: Dataset, *, lr: float, batch_size, epochs: int,
                       weight_decay: float = 0.0, seed: int = 0, snapshots: str | Path | None = None,
                       every: int | None = None) -> dict:
    """Train ``model`` (in place) to the plateau and as long again, with plain SGD at a constant ``lr``.

    Returns a dict: ``model``; ``before`` and ``after``, the two phases' histories
    (:class:`sgdlab.callbacks.History`); ``w_N``, a copy of the weights (and buffers) at the
    plateau; ``w_M``, the model's own parameters at the end (:func:`sgdlab.params.model_params`,
    not a copy); ``trajectory``, the snapshots of the second phase written every ``every``
    updates into the folder ``snapshots`` (:class:`sgdlab.trajectory.Trajectory`), or ``None``
    without ``snapshots``. Seeds: ``seed`` orders the first phase's data, ``seed + 1`` the
    second's (the initialisation is the caller's, in ``model``).
    """
    if snapshots is not None and every is None:
        raise ValueError(f"snapshots={str(snapshots)!r} needs every= (updates between snapshots), got every=None")
    options = dict(lr=lr, batch_size=batch_size, epochs=epochs, weight_decay=weight_decay)
    before = train(model, data, seed=seed, **options)
    w_N = clone_params(model_params(model))
    callbacks = [] if snapshots is None else [SnapshotRecorder(snapshots, every=every)]
    after = train(model, data, seed=seed + 1, callbacks=callbacks, **options)
    return dict(model=model, before=before, after=after, w_N=w_N, w_M=model_params(model),
                trajectory=None if snapshots is None else Trajectory(snapshots))

"""The walk of SGD: the loss between every pair of consecutive iterates, recorded during training.

:class:`WalkRecorder` evaluates, during training, the full-set loss on the line between each
iterate and the next (the experiment of "A Walk with SGD", Xing, Arpit, Tsirigotis, Bengio
2018); its :class:`WalkResult` counts the barriers crossed and follows the valley floor.
:func:`record_walk` trains and records at once, and :func:`census_grid` repeats the census
over learning rates and batch sizes. Grid, loss, BatchNorm and barrier conventions are those
of :mod:`sgdlab.landscape`; why a step has a valley inside is :mod:`sgdlab.step_quadratic`.

The authors saved the whole model after every iteration and interpolated afterwards. Here
nothing is saved: the recorder keeps the previous iterate only and shares each segment end
with the next segment (the end of step t is the start of step t + 1, evaluated once).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .callbacks import Callback
from .files import write_atomic
from .landscape import DEFAULT_ALPHAS, LineEngine, check_alphas, excess_over_ends, valley_inside
from .models import make_model
from .params import BN_MODES, clone_params, model_params
from .train import train


# "SGD rarely crosses a barrier": at most this share of an epoch's steps (our reading of the
# paper's Table 1); the walk chapter's checks and the scoreboard's claim both use it
RARE_BARRIER_SHARE = 0.05


@dataclasses.dataclass
class WalkResult:
    """Loss curves between consecutive iterates, for each recorded epoch.

    ``epochs`` count from 1 (epoch 1 is the first pass over the data, as in the paper).
    For recorded epoch ``epochs[i]``: ``steps[i]`` holds the global indices of its recorded
    updates, ``curves[i]`` the full-set loss at each of ``alphas`` between the iterate
    before and after each of them (shape ``(n_steps, len(alphas))``, nats), and
    ``batch_loss[i]`` each update's mini-batch loss.
    """

    alphas: np.ndarray
    epochs: list
    steps: list
    curves: list
    batch_loss: list
    config: dict = dataclasses.field(default_factory=dict)

    def curves_of(self, epoch: int) -> np.ndarray:
        """The curves of one recorded epoch, shape ``(n_steps, len(alphas))``."""
        return self.segments(epoch)[1]

    def segments(self, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, curves)`` of one recorded epoch, or of all of them in order when ``epoch`` is None
        (for full-batch descent, where every epoch is one step)."""
        if epoch is None:
            return np.concatenate(self.steps), np.concatenate(self.curves)
        if epoch not in self.epochs:
            raise ValueError(f"epoch {epoch} was not recorded; recorded epochs: {self.epochs}")
        i = self.epochs.index(epoch)
        return self.steps[i], self.curves[i]

    def valley_floor(self, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each segment's lowest loss and its position in iterations (step index + alpha)."""
        steps, curves = self.segments(epoch)
        lowest = curves.argmin(axis=1)
        return steps + self.alphas[lowest], curves[np.arange(len(curves)), lowest]

    def census(self, tol: float = 0.0) -> list[dict]:
        """One row per recorded epoch: the paper's Table 1 and more.

        ``barriers``: segments with an interior point above both ends by more than ``tol``;
        ``max_relative_height``: the largest barrier height divided by the larger end loss;
        ``interior_minimum``: the share of segments whose lowest point is strictly inside;
        ``floor_rises`` / ``floor_falls``: pairs of consecutive updates, both with an interior
        minimum, whose minimum went up / down by more than ``tol`` (a rise says that the lowest
        point on the line through the next two iterates is higher than on the line through the
        previous two: the two lines point different ways, so it is not by itself a barrier
        between the two low points); ``mean_loss``: the mean full-set loss at the segment ends.
        """
        return [_census_row(steps, curves, tol, epoch=epoch) for epoch, steps, curves in zip(self.epochs, self.steps, self.curves)]

    def overall(self, tol: float = 0.0) -> dict:
        """The census over every recorded segment at once, in order (``epoch`` is None).

        Floor rises and falls count pairs of updates with consecutive indices across epoch
        boundaries too: for full-batch descent, whose every epoch is one update, the per-epoch
        :meth:`census` can never see one.
        """
        steps, curves = self.segments(None)
        return _census_row(steps, curves, tol, epoch=None)

    def save(self, path: str | Path) -> None:
        """Write the result as a NumPy ``.npz`` file (no pickles)."""
        arrays = {"alphas": self.alphas, "epochs": np.asarray(self.epochs), "config": np.asarray(json.dumps(self.config))}
        for epoch, steps, curves, batch in zip(self.epochs, self.steps, self.curves, self.batch_loss):
            arrays.update({f"steps_{epoch}": steps, f"curves_{epoch}": curves, f"batch_loss_{epoch}": batch})
        write_atomic(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> "WalkResult":
        with np.load(path, allow_pickle=False) as data:
            epochs = [int(e) for e in data["epochs"]]
            return cls(
                alphas=data["alphas"], epochs=epochs,
                steps=[data[f"steps_{e}"] for e in epochs],
                curves=[data[f"curves_{e}"] for e in epochs],
                batch_loss=[data[f"batch_loss_{e}"] for e in epochs],
                config=json.loads(str(data["config"])),
            )


def _census_row(steps: np.ndarray, curves: np.ndarray, tol: float, **extra) -> dict:
    """The census of segments ``curves`` of updates ``steps`` (see :meth:`WalkResult.census`)."""
    excess = excess_over_ends(curves)
    ends = np.maximum(curves[:, 0], curves[:, -1])
    inside = valley_inside(curves)
    floor = curves.min(axis=1)
    both = inside[1:] & inside[:-1] & (np.diff(steps) == 1)
    change = np.diff(floor)
    crossed = excess > tol
    return dict(
        **extra,
        steps=len(curves),
        barriers=int(crossed.sum()),
        max_relative_height=float((excess[crossed] / ends[crossed]).max()) if crossed.any() else 0.0,
        interior_minimum=float(inside.mean()),
        floor_rises=int((both & (change > tol)).sum()),
        floor_falls=int((both & (change < -tol)).sum()),
        mean_loss=float(curves[:, [0, -1]].mean()),
    )


class WalkRecorder(Callback):
    """Records, during training, the full-set loss between every pair of consecutive iterates.

    ``epochs`` lists the epochs to record, counting from 1; ``steps`` limits each to its
    first ``steps`` updates (``None``: the whole epoch). ``x``, ``y`` default to the whole
    training set (without augmentation). Keeps only the previous iterate, never a
    checkpoint per iteration; ``result`` is a :class:`WalkResult`. ``bn`` (default ``"batch"``,
    the authors' choice) says how BatchNorm evaluates (:mod:`sgdlab.landscape`). With ``save_to``, the
    result so far is written there (``.npz``) after every recorded epoch.
    Full-batch gradient descent records the same way: one step per epoch.
    """

    def __init__(self, epochs: Sequence[int] = (1,), *, steps: int | None = None, alphas: Sequence[float] = DEFAULT_ALPHAS,
                 x: torch.Tensor | None = None, y: torch.Tensor | None = None, chunk_size: int = 4096,
                 bn: str = "batch", cache_bytes: int = 2 ** 28, save_to: str | Path | None = None):
        self.epochs = sorted(set(int(e) for e in epochs))
        if not self.epochs or self.epochs[0] < 1:
            raise ValueError(f"epochs must be a non-empty list of epoch numbers counted from 1, got {list(epochs)}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be a positive int or None, got steps={steps!r}")
        self.alphas = check_alphas(alphas)
        if len(self.alphas) < 3 or self.alphas[0] != 0 or self.alphas[-1] != 1:
            raise ValueError(f"alphas must include 0 and 1 and an interior point, got {self.alphas.tolist()}")
        if bn not in BN_MODES:
            raise ValueError(f"bn={bn!r} is not known; choose one of: {', '.join(BN_MODES)}")
        self.steps, self.x, self.y, self.save_to = steps, x, y, save_to
        self.options = dict(chunk_size=chunk_size, bn=bn, cache_bytes=cache_bytes)
        self._records: dict[int, dict] = {}
        self._previous = None
        self._config: dict = {}

    def on_train_begin(self, model, dataset):
        x = self.x if self.x is not None else dataset.x_train
        y = self.y if self.y is not None else dataset.y_train
        self.engine = LineEngine(model, x, y, **self.options)
        self.model = model
        self._config = dict(dataset=dataset.name, n_examples=len(x), **{k: v for k, v in self.options.items() if k != "cache_bytes"})
        if 1 in self.epochs:
            self._start()

    def _start(self):
        """Remember the current iterate as the start of the first recorded segment of an epoch."""
        params = clone_params(model_params(self.model))
        z = self.engine.first_layer(params)
        loss = self.engine.losses(params, params, self.alphas[:1], z, z)[0]
        self._previous = (params, z, float(loss))

    def on_step(self, step):
        epoch = step.epoch + 1
        if epoch not in self.epochs or self._previous is None:
            return
        record = self._records.setdefault(epoch, dict(steps=[], curves=[], batch_loss=[]))
        params_a, z_a, loss_a = self._previous
        params_b = clone_params(step.params_after)
        z_b = self.engine.first_layer(params_b)
        losses = self.engine.losses(params_a, params_b, self.alphas[1:], z_a, z_b)
        record["steps"].append(step.index)
        record["curves"].append(np.concatenate([[loss_a], losses.numpy()]))
        record["batch_loss"].append(step.loss)
        self._previous = (params_b, z_b, float(losses[-1]))
        if self.steps is not None and len(record["steps"]) == self.steps:
            self._previous = None  # this epoch is done: keep nothing

    def on_epoch_end(self, epoch, history):
        if self.save_to is not None and epoch + 1 in self._records:
            self.result.save(self.save_to)
        self._previous = None
        if epoch + 2 in self.epochs:  # the next epoch, counted from 1
            self._start()

    def state_dict(self) -> dict:
        """The recorded epochs so far, as tensors (see :meth:`sgdlab.callbacks.Callback.state_dict`)."""
        return {"records": {str(epoch): dict(steps=torch.tensor(r["steps"], dtype=torch.int64),
                                             curves=torch.from_numpy(np.stack(r["curves"])),
                                             batch_loss=torch.tensor(r["batch_loss"], dtype=torch.float64))
                            for epoch, r in self._records.items()},
                "recording": self._previous is not None}

    def load_state_dict(self, state: dict) -> None:
        self._records = {int(epoch): dict(steps=r["steps"].tolist(), curves=list(r["curves"].numpy()),
                                          batch_loss=r["batch_loss"].tolist())
                         for epoch, r in state["records"].items()}
        self._previous = None
        if state["recording"]:  # checkpoints are written at epoch ends: the next epoch starts here
            self._start()

    def on_train_end(self, history):
        self._previous = None
        self._config.update({k: history.config.get(k) for k in ("lr", "batch_size", "optimizer", "momentum", "weight_decay", "seed")})

    @property
    def result(self) -> WalkResult:
        epochs = [e for e in self.epochs if e in self._records]
        records = [self._records[e] for e in epochs]
        return WalkResult(
            alphas=self.alphas.numpy(),
            epochs=epochs,
            steps=[np.asarray(r["steps"], dtype=np.int64) for r in records],
            curves=[np.stack(r["curves"]) for r in records],
            batch_loss=[np.asarray(r["batch_loss"]) for r in records],
            config=dict(self._config),
        )


def check_eval_examples(eval_examples, dataset) -> None:
    """``eval_examples`` of :func:`record_walk`: ``None`` or an int in ``1..dataset.n_train``."""
    if eval_examples is not None and (isinstance(eval_examples, bool) or not isinstance(eval_examples, int)
                                      or not 0 < eval_examples <= dataset.n_train):
        raise ValueError(f"eval_examples must be in 1..{dataset.n_train} or None, got {eval_examples!r}")


def record_walk(model: nn.Module, dataset, *, epochs: Sequence[int], lr: float, batch_size, steps: int | None = None,
                eval_examples: int | None = None, train_epochs: int | None = None, bn: str = "batch",
                save_to: str | Path | None = None, **train_options):
    """Train ``model`` with ``sgdlab.train`` and record the walk in ``epochs`` (counted from 1).

    Training runs until the last recorded epoch unless ``train_epochs`` says longer.
    ``eval_examples`` evaluates the interpolated losses on the first examples of the
    training set only (``None``: all of them, as in the paper). ``bn`` and ``save_to`` go
    to :class:`WalkRecorder`, ``train_options`` to :func:`sgdlab.train` (``checkpoint=``
    makes the run resumable). Returns ``(history, walk_result)``.
    """
    check_eval_examples(eval_examples, dataset)
    keep = slice(0, eval_examples)
    recorder = WalkRecorder(epochs, steps=steps, x=dataset.x_train[keep], y=dataset.y_train[keep], bn=bn, save_to=save_to)
    history = train(model, dataset, lr=lr, batch_size=batch_size, epochs=max(max(recorder.epochs), train_epochs or 0),
                    callbacks=[recorder, *train_options.pop("callbacks", ())], **train_options)
    result = recorder.result
    result.config.update(arch=type(model).__name__, eval_examples=len(recorder.engine.x))
    return history, result


def census_grid(arch: str, dataset, *, lrs: Sequence[float], batch_sizes: Sequence, epoch: int = 1,
                eval_examples: int | None = None, seed: int = 0, bn: str = "batch", **train_options) -> list[dict]:
    """The census of epoch ``epoch`` for every learning rate and batch size (the appendix grid of the paper).

    One fresh network ``arch`` (seed ``seed``) per point, trained with :func:`record_walk`; one
    row per point, ``lr`` and ``batch_size`` added to the census row (its ``epoch`` dropped).
    """
    rows = []
    for lr in lrs:
        for batch_size in batch_sizes:
            _, result = record_walk(make_model(arch, dataset, seed=seed), dataset, epochs=(epoch,), lr=lr,
                                    batch_size=batch_size, eval_examples=eval_examples, seed=seed, bn=bn,
                                    **train_options)
            row = result.census()[0]
            row.pop("epoch")
            rows.append(dict(lr=lr, batch_size=batch_size, **row))
    return rows

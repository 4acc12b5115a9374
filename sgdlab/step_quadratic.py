"""Why a step of SGD has a valley inside: the quadratic model of the full loss along the step.

Along the step ``d = theta_{t+1} - theta_t`` (``-lr * g_B`` for plain SGD), the full-set loss
is, to second order, ``L(theta_t + alpha d) ~ L + alpha g.d + alpha^2 d.H.d / 2`` (``g`` and
``H`` the full-set gradient and Hessian at ``theta_t``). Its minimum lies at ``alpha* =
g.g_B / (lr g_B.H.g_B)``, inside the segment exactly when the ratio ``r = lr g_B.H.g_B /
g.g_B`` exceeds 1: the step overshoots the lowest point along its own direction (the
under-damped regime of "A Walk with SGD", Xing, Arpit, Tsirigotis, Bengio 2018). For
full-batch gradient descent ``r = lr g.H.g / g.g``, the learning rate times the alignment.

:class:`StepQuadraticRecorder` measures ``g.d`` and ``d.H.d`` with exact Hessian-vector
products (:class:`sgdlab.hessian.LossOnSet`) for the same updates a
:class:`sgdlab.walk.WalkRecorder` records, so the model's prediction can be set beside the
measured segment (:func:`walk_with_quadratic`, :func:`valley_share_by_ratio`);
:func:`gd_and_sgd_walks` records both for full-batch descent and SGD, and
:func:`valley_prediction` scores the model's predictions over such runs.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .callbacks import Callback
from .hessian import LossOnSet
from .models import make_model
from .landscape import valley_inside
from .walk import WalkResult, check_eval_examples, record_walk


@dataclasses.dataclass
class StepQuadratic:
    """The quadratic model of the full-set loss along each recorded step, from exact derivatives.

    For the step ``d = theta_{t+1} - theta_t`` (``d = -lr * g_B`` for plain SGD) and the
    full-set loss ``L`` at ``theta_t`` with gradient ``g`` and Hessian ``H``:
    ``L(theta_t + alpha d) ~ L + alpha g.d + alpha^2 d.H.d / 2``. Per recorded update,
    ``steps`` holds its global index, ``descent`` = ``-g.d`` (nats; positive when the step
    starts downhill) and ``curvature`` = ``d.H.d`` (nats). ``ratio`` = ``curvature /
    descent`` = ``lr g_B.H.g_B / g.g_B`` (dimensionless) and ``alpha_star`` = ``1 / ratio``,
    the position of the model's minimum in units of the step. The model has a minimum
    strictly inside the segment exactly when ``descent > 0`` and ``ratio > 1``.
    ``alignment`` = ``g.H.g / g.g`` (nats per squared parameter unit) is the curvature along
    the full gradient at the same point: ``lr * alignment`` is the ratio a full-batch
    gradient-descent step from there would have (NaN where not recorded).
    """

    steps: np.ndarray
    lr: np.ndarray
    descent: np.ndarray
    curvature: np.ndarray
    alignment: np.ndarray | None = None

    @property
    def ratio(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.curvature / self.descent

    @property
    def alpha_star(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.descent / self.curvature

    def predicts_valley(self, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """Whether the quadratic's minimum lies strictly between ``low`` and ``high`` (in units of the step).

        ``(0, 1)`` is the segment; on the 11-point grid a valley shows only when the minimum is
        nearer an interior grid point than either end, ``(0.05, 0.95)``.
        """
        a = self.alpha_star
        return (self.curvature > 0) & (self.descent > 0) & (a > low) & (a < high)


class StepQuadraticRecorder(Callback):
    """Records :class:`StepQuadratic` for the updates a :class:`sgdlab.walk.WalkRecorder` with the same
    ``epochs`` and ``steps`` would record: one full-set gradient and one Hessian-vector
    product (:class:`sgdlab.hessian.LossOnSet`) per update, on ``x``, ``y`` (default: the whole
    training set), with BatchNorm as ``bn`` says; with ``alignment``, one more product for
    ``StepQuadratic.alignment``."""

    wants_params_before = True

    def __init__(self, epochs: Sequence[int] = (1,), *, steps: int | None = None,
                 x: torch.Tensor | None = None, y: torch.Tensor | None = None, bn: str = "batch",
                 alignment: bool = False):
        self.epochs = set(int(e) for e in epochs)
        self.steps, self.x, self.y, self.bn, self.alignment = steps, x, y, bn, alignment
        self._rows: list[tuple] = []
        self._count: dict[int, int] = {}

    def on_train_begin(self, model, dataset):
        self.x = self.x if self.x is not None else dataset.x_train
        self.y = self.y if self.y is not None else dataset.y_train

    def on_step(self, step):
        epoch = step.epoch + 1
        done = self._count.get(epoch, 0)
        if epoch not in self.epochs or (self.steps is not None and done >= self.steps):
            return
        self._count[epoch] = done + 1
        before = step.params_before
        loss = LossOnSet(step.model, before, self.x, self.y, bn=self.bn)
        after = step.params_after
        d = {n: (after[n] - before[n]).detach() for n in loss.names}
        g, hd = loss.gradient(), loss.hvp(d)
        dot = lambda u, v: sum(float((u[n] * v[n]).sum()) for n in loss.names)
        alignment = dot(g, loss.hvp(g)) / dot(g, g) if self.alignment else float("nan")
        self._rows.append((step.index, step.lr, -dot(g, d), dot(hd, d), alignment))

    @property
    def result(self) -> StepQuadratic:
        columns = list(zip(*self._rows)) if self._rows else [[]] * 5
        return StepQuadratic(np.asarray(columns[0], dtype=np.int64), *(np.asarray(c, dtype=np.float64) for c in columns[1:]))


def walk_with_quadratic(model: nn.Module, dataset, *, epochs: Sequence[int], lr: float, batch_size,
                        steps: int | None = None, eval_examples: int | None = None, bn: str = "batch",
                        alignment: bool = True, **train_options):
    """:func:`sgdlab.walk.record_walk`, and the quadratic model of every recorded step (:class:`StepQuadraticRecorder`,
    on the same examples and BatchNorm mode, with the full gradient's ``alignment`` unless told
    not to). Returns ``(history, walk_result, step_quadratic)``, the last two over the same
    updates in the same order."""
    check_eval_examples(eval_examples, dataset)
    keep = slice(0, eval_examples)
    quadratic = StepQuadraticRecorder(epochs, steps=steps, x=dataset.x_train[keep], y=dataset.y_train[keep], bn=bn,
                                      alignment=alignment)
    history, walk = record_walk(model, dataset, epochs=epochs, lr=lr, batch_size=batch_size, steps=steps,
                                eval_examples=eval_examples, bn=bn,
                                callbacks=[quadratic, *train_options.pop("callbacks", ())], **train_options)
    return history, walk, quadratic.result


def valley_share_by_ratio(quadratics, inside, edges: Sequence[float]) -> list[dict]:
    """The share of steps with a measured valley inside, per bin of the quadratic's ratio.

    ``quadratics``: a :class:`StepQuadratic` or a list of them, ``inside``: for each of their
    steps (a list of arrays alike) whether the measured segment has its lowest point strictly
    inside. Bins are ``[edges[i], edges[i + 1])`` of ``StepQuadratic.ratio``
    (``lr g_B.H.g_B / g.g_B``); steps that start uphill (``g.g_B <= 0``) fall in no bin. One
    row per bin: ``low``, ``high``, ``steps``, ``share`` and ``median`` (the bin's median
    ratio; NaN when the bin is empty).

    >>> q = StepQuadratic(np.arange(4), np.ones(4), np.array([1.0, 1.0, 1.0, -1.0]), np.array([0.5, 2.0, 3.0, 1.0]))
    >>> [(r["steps"], r["share"]) for r in valley_share_by_ratio(q, np.array([False, True, False, True]), (0, 1, 10))]
    [(1, 0.0), (2, 0.5)]
    """
    if isinstance(quadratics, StepQuadratic):
        quadratics, inside = [quadratics], [inside]
    ratio = np.concatenate([np.where(q.descent > 0, q.ratio, np.nan) for q in quadratics])
    inside = np.concatenate([np.asarray(i, dtype=bool) for i in inside])
    if len(ratio) != len(inside):
        raise ValueError(f"inside must hold one value per step: {len(inside)} values for {len(ratio)} steps")
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        chosen = (ratio >= low) & (ratio < high)
        rows.append(dict(low=low, high=high, steps=int(chosen.sum()),
                         share=float(inside[chosen].mean()) if chosen.any() else float("nan"),
                         median=float(np.median(ratio[chosen])) if chosen.any() else float("nan")))
    return rows


def gd_and_sgd_walks(arch: str, dataset, *, lrs: Sequence[float], steps: int, batch_size: int, bn: str = "batch",
                     seed: int = 0) -> dict[tuple[str, float], tuple[WalkResult, StepQuadratic]]:
    """The walk and the quadratic model (:func:`walk_with_quadratic`) of full-batch gradient descent
    and of SGD, each from a fresh network ``arch`` (seed ``seed``) at every learning rate of ``lrs``.

    ``("GD", lr)``: the first ``steps`` steps of full-batch descent (epochs 1 to ``steps``, one
    step each); ``("SGD", lr)``: the first ``steps`` steps of epoch 2 with mini-batches of
    ``batch_size``. Data order seed ``seed``; ``bn`` as in :class:`sgdlab.walk.WalkRecorder`.
    Returns ``(kind, lr) -> (walk_result, step_quadratic)``, GD before SGD for each ``lr``.
    """
    runs = {}
    for lr in lrs:
        for kind, batch, epochs, count in (("GD", "full", range(1, steps + 1), None), ("SGD", batch_size, (2,), steps)):
            _, walk, quadratic = walk_with_quadratic(make_model(arch, dataset, seed=seed), dataset, epochs=epochs,
                                                     steps=count, lr=lr, batch_size=batch, seed=seed, bn=bn)
            runs[kind, lr] = walk, quadratic
    return runs


@dataclasses.dataclass(frozen=True)
class ValleyPrediction:
    """The quadratic model's predictions against the measured segments, over several runs.

    ``per_step``: for each run's key, a dict of arrays with one entry per step, in order:
    ``inside`` (the measured segment has its lowest point strictly inside,
    :func:`sgdlab.landscape.valley_inside`), ``predicted`` (:meth:`StepQuadratic.predicts_valley`),
    ``lowest`` (the measured lowest point's alpha, in units of the step), and ``quadratic``
    (the run's :class:`StepQuadratic`). ``by_kind``: :func:`valley_share_by_ratio` over the
    bins the function was given, pooling the runs whose key starts with each kind (``"GD"``,
    ``"SGD"``); ``pooled``: the same over every run in two bins, ``r < 1`` and ``r >= 1``.
    """

    per_step: dict
    by_kind: dict[str, list[dict]]
    pooled: list[dict]

    @property
    def steps(self) -> int:
        """Steps over every run."""
        return sum(len(s["inside"]) for s in self.per_step.values())

    @property
    def agreement(self) -> float:
        """The share of steps where the prediction says right whether the segment has a valley inside."""
        return float(np.mean(np.concatenate([s["inside"] == s["predicted"] for s in self.per_step.values()])))

    @property
    def downward(self) -> int:
        """Steps that start downhill along which the loss curves down (``ratio <= 0``)."""
        return sum(int(((s["quadratic"].curvature <= 0) & (s["quadratic"].descent > 0)).sum())
                   for s in self.per_step.values())


def valley_prediction(runs: dict, edges: Sequence[float]) -> ValleyPrediction:
    """:class:`ValleyPrediction` of ``runs`` (key -> ``(walk_result, step_quadratic)`` over the same
    steps, as :func:`gd_and_sgd_walks` returns; the key's first item is the kind), its
    ``by_kind`` shares binned by ratio at ``edges``."""
    per_step = {}
    for key, (walk, quadratic) in runs.items():
        curves = walk.segments(None)[1]
        per_step[key] = dict(inside=valley_inside(curves), predicted=quadratic.predicts_valley(), quadratic=quadratic,
                             lowest=walk.alphas[curves.argmin(1)])
    kinds = dict.fromkeys(key[0] for key in per_step)
    by_kind = {kind: _shares([s for key, s in per_step.items() if key[0] == kind], edges) for kind in kinds}
    return ValleyPrediction(per_step, by_kind, _shares(list(per_step.values()), (-np.inf, 1.0, np.inf)))


def _shares(chosen: list[dict], edges: Sequence[float]) -> list[dict]:
    """:func:`valley_share_by_ratio` of the steps of ``chosen`` (entries of :attr:`ValleyPrediction.per_step`)."""
    return valley_share_by_ratio([s["quadratic"] for s in chosen], [s["inside"] for s in chosen], edges)

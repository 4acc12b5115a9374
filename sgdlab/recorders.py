"""Recorders that measure the loss surface while training runs: the cosine between consecutive
mini-batch gradients ("A Walk with SGD", eq. 5), the top Hessian eigenvalue every few steps,
and the distance of the weights from their initial values (Hoffer, Hubara and Soudry 2017);
and :class:`IterateRecorder`, which keeps the iterates themselves where a chapter needs them.

Each is a :class:`sgdlab.callbacks.Callback` that only watches; it records one run, and a
resumed run continues where its checkpoint left off.

Conventions
-----------
* Steps and iterations: ``Step.index`` t is a global step index; after it, ``t + 1``
  iterations (updates) are done.
* Eigenvalues: of the Hessian of :mod:`sgdlab.hessian`, in nats per squared parameter unit.
* Distance: Euclidean norm ``||w_t - w_0||`` over the trainable parameters
  (``model.named_parameters()``), never the BatchNorm buffers, in parameter units.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from .callbacks import Callback
from .checks import check_int
from .gauss_newton import gauss_newton_top_eigenvalues
from .hessian import batchnorm_mode, top_eigenvalues
from .params import Params, clone_params, flatten, model_params


class GradientCosineRecorder(Callback):
    """Cosine between consecutive mini-batch gradients at every step ("A Walk with SGD", eq. 5).

    ``cos(g_{t-1}, g_t) = g_{t-1}^T g_t / (||g_{t-1}|| ||g_t||)`` with ``g_t`` the gradient of
    step t's mini-batch loss, as the training step computed it (``Step.grads``: train-mode
    BatchNorm, no weight decay), over all parameters with a gradient, in float64. Keeps only
    the previous gradient, flattened. ``steps`` holds t (>= 1, global step indices) and
    ``cosines`` the values (NaN where a gradient is zero). Records one run; a resumed run
    continues where its checkpoint left off.
    """

    def __init__(self):
        self._previous: torch.Tensor | None = None
        self._steps: list[int] = []
        self._cosines: list[float] = []

    def on_train_begin(self, model, dataset):
        self._previous, self._steps, self._cosines = None, [], []

    def on_step(self, step):
        g = torch.cat([t.reshape(-1) for t in step.grads.values()]).double()
        if self._previous is not None and len(self._previous) == len(g):  # else the parameters with a gradient changed
            denominator = float(self._previous.norm() * g.norm())
            self._steps.append(step.index)
            self._cosines.append(float(self._previous @ g) / denominator if denominator > 0 else math.nan)
        self._previous = g  # a new tensor (torch.cat), not the live gradients

    def on_train_end(self, history):
        self._previous = None

    def state_dict(self) -> dict:
        return {"previous": self._previous, "steps": list(self._steps), "cosines": list(self._cosines)}

    def load_state_dict(self, state: dict) -> None:
        self._previous, self._steps, self._cosines = state["previous"], list(state["steps"]), list(state["cosines"])

    @property
    def steps(self) -> np.ndarray:
        return np.asarray(self._steps, dtype=np.int64)

    @property
    def cosines(self) -> np.ndarray:
        return np.asarray(self._cosines, dtype=np.float64)


class TopEigenvalueRecorder(Callback):
    """The top Hessian eigenvalue (sharpness) every ``every`` steps of training, and before the first.

    The Hessian is of the mean loss over ``(x, y)`` (default: the whole training set, no
    augmentation) with BatchNorm in eval mode; ``options`` go to :func:`~sgdlab.hessian.top_eigenvalues`.
    ``iterations`` holds the number of updates done when each value was measured (0: at
    initialisation) and ``values`` the eigenvalues (nats per squared parameter unit).
    At the same points it records what the curvature of the cross-entropy depends on:
    ``losses``, the mean cross-entropy over ``(x, y)`` (nats), and ``confidences``, the mean
    over those examples of the largest softmax probability; with ``gauss_newton=True`` also
    ``gauss_newton_values``, the top eigenvalue of the Gauss-Newton matrix
    (:func:`~sgdlab.gauss_newton.gauss_newton_top_eigenvalues`, same options).
    Records one run; a resumed run continues where its checkpoint left off.
    """

    def __init__(self, every: int = 100, *, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                 gauss_newton: bool = False, **options):
        self.every = check_int("every", every, 1)
        self.x, self.y, self.options = x, y, options
        self.gauss_newton = bool(gauss_newton)
        self._iterations: list[int] = []
        self._values: list[float] = []
        self._losses: list[float] = []
        self._confidences: list[float] = []
        self._gauss_newton: list[float] = []

    def _measure(self, model, iterations):
        params = model_params(model)
        values = top_eigenvalues(model, params, self._x, self._y, 1, **self.options)
        self._iterations.append(iterations)
        self._values.append(float(values[0]))
        loss, confidence = _loss_and_confidence(model, params, self._x, self._y)
        self._losses.append(loss)
        self._confidences.append(confidence)
        if self.gauss_newton:
            self._gauss_newton.append(float(gauss_newton_top_eigenvalues(model, params, self._x, self._y, 1,
                                                                         **self.options)[0]))

    def on_train_begin(self, model, dataset):
        self._x = self.x if self.x is not None else dataset.x_train
        self._y = self.y if self.y is not None else dataset.y_train
        self._iterations, self._values, self._losses, self._confidences, self._gauss_newton = [], [], [], [], []
        self._measure(model, 0)

    def on_step(self, step):
        if (step.index + 1) % self.every == 0:
            self._measure(step.model, step.index + 1)

    def state_dict(self) -> dict:
        return {"iterations": list(self._iterations), "values": list(self._values), "losses": list(self._losses),
                "confidences": list(self._confidences), "gauss_newton": list(self._gauss_newton)}

    def load_state_dict(self, state: dict) -> None:
        self._iterations, self._values = list(state["iterations"]), list(state["values"])
        # checkpoints written before these were recorded lack them
        self._losses, self._confidences = list(state.get("losses", [])), list(state.get("confidences", []))
        self._gauss_newton = list(state.get("gauss_newton", []))

    @property
    def iterations(self) -> np.ndarray:
        return np.asarray(self._iterations, dtype=np.int64)

    @property
    def values(self) -> np.ndarray:
        return np.asarray(self._values, dtype=np.float64)

    @property
    def losses(self) -> np.ndarray:
        return np.asarray(self._losses, dtype=np.float64)

    @property
    def confidences(self) -> np.ndarray:
        return np.asarray(self._confidences, dtype=np.float64)

    @property
    def gauss_newton_values(self) -> np.ndarray:
        return np.asarray(self._gauss_newton, dtype=np.float64)


def _loss_and_confidence(model, params, x, y, chunk: int = 4096) -> tuple[float, float]:
    """Mean cross-entropy (nats) and mean largest softmax probability over ``(x, y)``, BatchNorm in eval mode."""
    loss = confidence = 0.0
    with torch.no_grad(), batchnorm_mode(model, "eval"):
        for start in range(0, len(x), chunk):
            logits = functional_call(model, params, (x[start:start + chunk],))
            loss += float(F.cross_entropy(logits, y[start:start + chunk], reduction="sum"))
            confidence += float(logits.softmax(-1).max(-1).values.double().sum())
    return loss / len(x), confidence / len(x)


class DistanceFromInitRecorder(Callback):
    """``||w_t - w_0||`` over the trainable parameters after every step.

    Keeps ``w_0`` once, flattened in float64. ``iterations`` holds t (>= 1, updates done)
    and ``distances`` the distances (parameter units). Records one run; a resumed run
    continues where its checkpoint left off (with the saved ``w_0``).
    """

    def __init__(self):
        self._start: torch.Tensor | None = None
        self._distances: list[float] = []

    @staticmethod
    def _flat(model) -> torch.Tensor:
        return flatten(model_params(model, buffers=False)).double()

    def on_train_begin(self, model, dataset):
        self._start, self._distances = self._flat(model).clone(), []

    def on_step(self, step):
        self._distances.append(float((self._flat(step.model) - self._start).norm()))

    def state_dict(self) -> dict:
        return {"start": self._start, "distances": list(self._distances)}

    def load_state_dict(self, state: dict) -> None:
        self._start, self._distances = state["start"], list(state["distances"])

    @property
    def iterations(self) -> np.ndarray:
        return np.arange(1, len(self._distances) + 1, dtype=np.int64)

    @property
    def distances(self) -> np.ndarray:
        return np.asarray(self._distances, dtype=np.float64)


class IterateRecorder(Callback):
    """Keeps copies of the iterates: the parameters (and, with ``buffers``, the BatchNorm
    statistics) before the first update and after the updates chosen.

    An iterate is kept after update ``t`` (counted from 1) when ``every`` divides ``t``, when
    ``t`` is in ``at``, and, with ``epochs``, at the end of every epoch; update 0 is the
    initialisation, always kept. ``steps`` lists the ``t`` kept, in order, and ``iterates``
    the copies (dicts like :func:`sgdlab.params.model_params`, on the model's device);
    :meth:`flat` stacks them as vectors. Copies cost memory: keep only what is needed.

    >>> import sgdlab
    >>> data = sgdlab.load_dataset("digits")
    >>> keep = IterateRecorder(every=5, epochs=True)
    >>> _ = sgdlab.train(sgdlab.make_model("mlp", data, seed=0), data, lr=0.1, batch_size=500, epochs=2,
    ...                  progress=False, evaluate=False, callbacks=[keep])
    >>> keep.steps
    [0, 3, 5, 6]
    """

    def __init__(self, *, every: int | None = None, at=(), epochs: bool = False, buffers: bool = True):
        self.every = None if every is None else check_int("every", every, 1)
        self.at = {check_int("at", t, 1) for t in at}
        self.epochs, self.buffers = bool(epochs), bool(buffers)
        self.steps: list[int] = []
        self.iterates: list[Params] = []

    def _keep(self, t: int) -> None:
        if not self.steps or self.steps[-1] != t:
            self.steps.append(t)
            self.iterates.append(clone_params(model_params(self._model, buffers=self.buffers)))

    def on_train_begin(self, model, dataset):
        self._model, self.steps, self.iterates = model, [], []
        self._keep(0)

    def on_step(self, step):
        t = step.index + 1
        if (self.every is not None and t % self.every == 0) or t in self.at:
            self._keep(t)

    def on_epoch_end(self, epoch, history):
        if self.epochs:
            self._keep(history.steps)

    def flat(self, *, trainable_only: bool = True) -> torch.Tensor:
        """The iterates as rows of one matrix, ``(len(steps), P)``: each flattened by :func:`sgdlab.params.flatten`,
        over the trainable parameters only unless told otherwise."""
        names = {name for name, _ in self._model.named_parameters()}
        return torch.stack([flatten({k: v for k, v in it.items() if k in names or not trainable_only})
                            for it in self.iterates])

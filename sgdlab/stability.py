"""How much the network changes from one update to the next, seen on a fixed probe batch.

Learning-rate decay is usually explained as letting the weights settle into a minimum. It
also makes consecutive updates see nearly the same network: the activations of every layer
and the gradients on a fixed batch stop drifting. :class:`StabilityRecorder` measures that
drift at every step of :func:`sgdlab.train`; :func:`rate_drops` and :func:`drift_ratio`
compare it before and after the rate falls.

Conventions
-----------
* The *probe batch* is fixed for the whole run: the first ``probe`` training examples (no
  augmentation), or the ``x``, ``y`` given. It never feeds the optimiser: measuring changes
  nothing in training (no gradient is written to the model, no BatchNorm statistic is
  updated, no random number is drawn), so a run with the recorder ends bit for bit where the
  same run without it ends.
* BatchNorm (``bn``): ``"batch"`` (the default) normalises the probe batch with its own
  statistics, so the probe's outputs depend on the weights alone; ``"eval"`` uses the
  running statistics, which training updates at every step whatever the rate: the drift then
  has a floor that does not fall with the rate (measure it with a run at a tiny rate). For a
  network without BatchNorm the two are the same.
* Step t is measured at the iterate *after* update t and compared with the iterate after
  update t - 1 (for t = 0: the initial network). Drifts are in float64.
* Activation drift of a layer: ``||A_t - A_{t-1}|| / ||A_{t-1}||``, ``A`` the layer's output
  on the whole probe batch (Frobenius norm, dimensionless). Layers: by default every module
  that owns parameters (Linear, Conv, BatchNorm), named as in ``model.named_modules()``.
* Probe-gradient drift: ``||G_t - G_{t-1}|| / ||G_{t-1}||``, ``G`` the gradient of the mean
  probe loss (``bn`` as above, no weight decay) over all trainable parameters: the backward
  signal on a fixed batch.
* Loss change: ``mean_i |l_i(t) - l_i(t-1)|`` over the probe examples' cross-entropies (nats).
* Mini-batch gradient: ``gradient_norm`` is ``||g_t||``, the Euclidean norm of step t's
  mini-batch gradient as the training step computed it (``Step.grads``: train mode, no weight
  decay), over all parameters with a gradient; ``gradient_cosine`` is the cosine between
  ``g_{t-1}`` and ``g_t`` (NaN at step 0), as :class:`sgdlab.recorders.GradientCosineRecorder`
  defines it ("A Walk with SGD", eq. 5). Both in float64.
* Dead units (:func:`dead_unit_fraction`): a unit of a ReLU layer is dead on a set of
  inputs when its output is 0 for every one of them (and, in a convolution, at every position).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from .callbacks import Callback
from .params import BN_MODES, evaluation


@dataclasses.dataclass
class StabilityResult:
    """Per-step drift of one run (see the module docstring for the definitions).

    ``steps``: global step indices t; ``epoch``: (t + 1) / steps_per_epoch, the epochs done
    after update t (NaN while the first epoch of a run is still in progress); ``lr``: the
    rate update t used. ``activation_drift`` maps a layer name to its drift per step;
    ``gradient_drift``, ``loss_change`` (nats), ``probe_loss`` (mean probe cross-entropy after
    update t, nats), ``gradient_norm`` (of the mini-batch gradient, nats per parameter unit)
    and ``gradient_cosine`` are arrays over steps.
    """

    steps: np.ndarray
    epoch: np.ndarray
    lr: np.ndarray
    activation_drift: dict
    gradient_drift: np.ndarray
    loss_change: np.ndarray
    probe_loss: np.ndarray
    gradient_norm: np.ndarray
    gradient_cosine: np.ndarray

    @property
    def layers(self) -> list[str]:
        return list(self.activation_drift)

    def mean_activation_drift(self) -> np.ndarray:
        """The activation drift averaged over layers, per step (each layer weighs the same)."""
        return np.mean(np.stack(list(self.activation_drift.values())), axis=0)

    def save(self, path: str | Path) -> None:
        """Write the result as ``.npz`` (layers under ``activation_drift/<name>``)."""
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "activation_drift"}
        arrays.update({f"activation_drift/{name}": values for name, values in self.activation_drift.items()})
        arrays["layers"] = np.array(self.layers)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "StabilityResult":
        with np.load(path) as saved:
            fields = {f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name != "activation_drift"}
            drift = {str(name): saved[f"activation_drift/{name}"] for name in saved["layers"]}
        return cls(activation_drift=drift, **fields)


class StabilityRecorder(Callback):
    """Drift of activations, probe gradient and probe losses at every step (module docstring).

    ``probe``: how many training examples (the first ones) form the probe batch, unless
    ``x`` and ``y`` give it. ``layers``: names of modules whose outputs are compared (default:
    every module that owns parameters). ``bn``: how BatchNorm normalises the probe batch,
    ``"batch"`` or ``"eval"`` (module docstring). Keeps only the previous step's activations, probe
    gradient and probe losses; :attr:`result` holds the per-step values. Records one run; a
    resumed run continues where its checkpoint left off (the previous step's measurements are
    recomputed from the restored parameters rather than stored in the checkpoint).
    """

    def __init__(self, probe: int = 256, *, layers=None, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                 bn: str = "batch"):
        if isinstance(probe, bool) or not isinstance(probe, int) or probe <= 0:
            raise ValueError(f"probe must be a positive int (examples in the probe batch), got probe={probe!r}")
        if (x is None) != (y is None):
            raise ValueError("give both x and y for the probe batch, or neither (then the first `probe` training examples are used)")
        if x is not None and (len(x) != len(y) or len(x) == 0):
            raise ValueError(f"x and y must hold the same, non-zero number of examples; got {len(x)} and {len(y)}")
        if layers is not None and (isinstance(layers, str) or not layers or not all(isinstance(n, str) for n in layers)):
            raise ValueError(f"layers must be a non-empty list of module names, or None for every module with parameters; got layers={layers!r}")
        if bn not in BN_MODES:
            raise ValueError(f"bn={bn!r} is not known; choose one of: {', '.join(BN_MODES)}")
        self.probe, self.x, self.y, self.bn = probe, x, y, bn
        self.layers = list(layers) if layers is not None else None
        self._model = None
        self._previous = None
        self._previous_grad: torch.Tensor | None = None  # the last mini-batch gradient, flattened (float64)
        self._records: dict = {}

    def on_train_begin(self, model, dataset):
        if self.x is None:
            if self.probe > dataset.n_train:
                raise ValueError(f"probe={self.probe} exceeds the {dataset.n_train} training examples of {dataset.name!r}")
            self._x, self._y = dataset.x_train[:self.probe], dataset.y_train[:self.probe]
        else:
            self._x, self._y = self.x.to(dataset.device), self.y.to(dataset.device)
        modules = dict(model.named_modules())
        if self.layers is None:
            self._layers = [name for name, m in modules.items() if name and any(True for _ in m.parameters(recurse=False))]
        else:
            unknown = [name for name in self.layers if name not in modules or not name]
            if unknown:
                raise ValueError(f"layers {unknown} are not modules of the model; its modules are: {', '.join(n for n in modules if n)}")
            self._layers = list(self.layers)
        self._model, self._steps_per_epoch = model, None
        self._records = dict(steps=[], lr=[], gradient_drift=[], loss_change=[], probe_loss=[], gradient_norm=[],
                             gradient_cosine=[], activation_drift={name: [] for name in self._layers})
        self._previous_grad = None
        self._previous = self._measure(model)

    def _measure(self, model) -> dict:
        """Activations per layer, per-example losses and the mean-loss gradient on the probe batch, at the model's
        current parameters; BatchNorm as ``bn`` says, on copies of the parameters and buffers, so the model is left
        exactly as it was."""
        modules = dict(model.named_modules())
        activations = {}
        hooks = [modules[name].register_forward_hook(lambda module, inputs, output, name=name: activations.__setitem__(name, output.detach()))
                 for name in self._layers]
        trainable = {name: p.detach().clone().requires_grad_() for name, p in model.named_parameters() if p.requires_grad}
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}  # "batch" mode updates these copies
        try:
            with evaluation(model, self.bn), torch.enable_grad():
                losses = F.cross_entropy(functional_call(model, {**trainable, **buffers}, (self._x,)), self._y, reduction="none")
                grads = torch.autograd.grad(losses.mean(), list(trainable.values()))
        finally:
            for hook in hooks:
                hook.remove()
        return dict(activations=activations, losses=losses.detach().double(),
                    gradient=torch.cat([g.reshape(-1) for g in grads]).double())

    def on_step(self, step):
        g = torch.cat([t.reshape(-1) for t in step.grads.values()]).double()
        cosine = math.nan
        if self._previous_grad is not None and len(self._previous_grad) == len(g):
            denominator = float(self._previous_grad.norm() * g.norm())
            cosine = float(self._previous_grad @ g) / denominator if denominator > 0 else math.nan
        self._previous_grad = g  # a new tensor (torch.cat), not the live gradients
        current, previous = self._measure(step.model), self._previous
        records = self._records
        records["steps"].append(step.index)
        records["lr"].append(step.lr)
        for name in self._layers:
            records["activation_drift"][name].append(_relative_change(current["activations"][name], previous["activations"][name]))
        records["gradient_drift"].append(_relative_change(current["gradient"], previous["gradient"]))
        records["loss_change"].append(float((current["losses"] - previous["losses"]).abs().mean()))
        records["probe_loss"].append(float(current["losses"].mean()))
        records["gradient_norm"].append(float(g.norm()))
        records["gradient_cosine"].append(cosine)
        self._previous = current

    def on_epoch_end(self, epoch, history):
        self._steps_per_epoch = history.steps_per_epoch

    def on_train_end(self, history):
        self._steps_per_epoch = history.steps_per_epoch
        self._previous = self._previous_grad = None

    def state_dict(self) -> dict:
        return {"records": {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in self._records.items()},
                "previous_grad": self._previous_grad, "steps_per_epoch": self._steps_per_epoch}

    def load_state_dict(self, state: dict) -> None:
        self._records = {k: ({name: list(values) for name, values in v.items()} if isinstance(v, dict) else list(v))
                         for k, v in state["records"].items()}
        self._previous_grad = state["previous_grad"]
        self._steps_per_epoch = state["steps_per_epoch"]
        self._previous = self._measure(self._model)  # the parameters are those after the checkpoint's last step

    @property
    def result(self) -> StabilityResult:
        """The per-step measurements so far (valid after training, or after any epoch)."""
        if not self._records:
            raise ValueError("nothing recorded yet: pass the recorder to sgdlab.train(..., callbacks=[recorder]) first")
        r = self._records
        steps = np.asarray(r["steps"], dtype=np.int64)
        per_epoch = self._steps_per_epoch or math.nan  # known once an epoch or the run has ended
        return StabilityResult(
            steps=steps, epoch=(steps + 1) / per_epoch, lr=np.asarray(r["lr"], dtype=np.float64),
            activation_drift={name: np.asarray(v, dtype=np.float64) for name, v in r["activation_drift"].items()},
            gradient_drift=np.asarray(r["gradient_drift"], dtype=np.float64),
            loss_change=np.asarray(r["loss_change"], dtype=np.float64),
            probe_loss=np.asarray(r["probe_loss"], dtype=np.float64),
            gradient_norm=np.asarray(r["gradient_norm"], dtype=np.float64),
            gradient_cosine=np.asarray(r["gradient_cosine"], dtype=np.float64),
        )


def _relative_change(current: torch.Tensor, previous: torch.Tensor) -> float:
    """``||current - previous|| / ||previous||`` in float64 (NaN when ``previous`` is zero)."""
    current, previous = current.double(), previous.double()
    denominator = float(previous.norm())
    return float((current - previous).norm()) / denominator if denominator > 0 else math.nan


def rate_drops(lr, *, factor: float = 2.0) -> np.ndarray:
    """Steps t at which the learning rate falls by at least ``factor`` in one update: ``lr[t-1] >= factor * lr[t]``.

    ``lr`` is the rate of each update (``History.step_lr`` or ``StabilityResult.lr``); t is
    the first update made with the lower rate. A cosine schedule falls a little at every
    step and has no drops, except in its last few steps, where the rate nears 0.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ValueError(f"factor must be a number above 1, got factor={factor!r}")
    lr = np.asarray(lr, dtype=np.float64)
    if lr.ndim != 1:
        raise ValueError(f"lr must be one rate per update (1-D), got an array of shape {lr.shape}")
    return np.flatnonzero(lr[:-1] >= factor * lr[1:]) + 1


def drift_ratio(values, at: int, window: int) -> float:
    """Mean of ``values`` over the ``window`` steps before step ``at`` over the mean over the ``window`` steps from ``at``.

    ``values`` is one number per step (e.g. ``StabilityResult.mean_activation_drift()``),
    indexed by step; ``at`` is usually a :func:`rate_drops` step. A ratio of 10 means the
    drift per step fell tenfold. NaNs (e.g. the cosine at step 0) are ignored.
    """
    values = np.asarray(values, dtype=np.float64)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window <= 0:
        raise ValueError(f"window must be a positive int (steps), got window={window!r}")
    if isinstance(at, bool) or not isinstance(at, (int, np.integer)) or not window <= at <= len(values) - window:
        raise ValueError(f"at={at!r} must be an int step with {window} steps (the window) on each side, in {window}..{len(values) - window}")
    before, after = np.nanmean(values[at - window:at]), np.nanmean(values[at:at + window])
    return float(before / after)


def drift_fall_at_drop(values, lr, window: int) -> float | None:
    """:func:`drift_ratio` of ``values`` at the first :func:`rate_drops` step of ``lr``, or ``None``
    when the rate never drops or the drop has fewer than ``window`` steps on either side.

    ``values`` and ``lr`` hold one number per step (e.g. ``StabilityResult.mean_activation_drift()``
    and ``History.step_lr``); ``window`` in steps.

    >>> drift_fall_at_drop([4.0, 4.0, 1.0, 1.0], [1.0, 1.0, 0.1, 0.1], 2)
    4.0
    >>> drift_fall_at_drop([4.0, 4.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.1], 2) is None
    True
    """
    drops = rate_drops(lr)
    if not len(drops) or not window <= drops[0] <= len(values) - window:
        return None
    return drift_ratio(values, int(drops[0]), window)


def dead_unit_fraction(model: torch.nn.Module, x: torch.Tensor, *, chunk_size: int = 4096) -> dict[str, float]:
    """The fraction of each ReLU layer's units that are dead on the inputs ``x``, by module name.

    A unit (one output feature of a ``torch.nn.ReLU`` module: a neuron of a fully connected
    layer, a channel of a convolution) is dead when its output is exactly 0 for every input in
    ``x`` and, for a channel, at every position: it then passes no gradient back for any of
    these inputs, and plain SGD on them cannot revive it. Evaluated in eval mode without
    gradients, in chunks of ``chunk_size`` examples; the model is left as it was.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int (examples), got chunk_size={chunk_size!r}")
    if len(x) == 0:
        raise ValueError("x must hold at least one example")
    relus = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.ReLU)}
    if not relus:
        raise ValueError(f"the model ({type(model).__name__}) has no torch.nn.ReLU module: no unit can be dead")
    alive: dict = {}  # name -> bool per unit: some input made it positive

    def record(name, output):
        positive = (output.detach() > 0).transpose(0, 1).reshape(output.shape[1], -1).any(dim=1)
        alive[name] = positive if name not in alive else alive[name] | positive

    hooks = [m.register_forward_hook(lambda module, inputs, output, name=name: record(name, output)) for name, m in relus.items()]
    try:
        with evaluation(model), torch.no_grad():
            for start in range(0, len(x), chunk_size):
                model(x[start:start + chunk_size])
    finally:
        for hook in hooks:
            hook.remove()
    return {name: float((~alive[name]).double().mean()) for name in relus}

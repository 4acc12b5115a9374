"""The loss along straight lines in weight space: interpolation, barriers, and the walk of SGD.

``interpolate(model, a, b, x, y, alphas)`` evaluates the mean loss over the whole set
``(x, y)`` at ``(1 - alpha) * a + alpha * b``. :class:`WalkRecorder` does this during
training between every pair of consecutive iterates of chosen epochs, the experiment of
"A Walk with SGD" (Xing, Arpit, Tsirigotis, Bengio 2018), and its :class:`WalkResult`
counts the barriers crossed and follows the valley floor.

Conventions
-----------
* Grid: 11 points, alpha = 0, 0.1, ..., 1.0, both ends included. Between consecutive
  iterates the end of step t is the start of step t + 1 and is evaluated once.
* Loss: mean cross-entropy over the whole set, no augmentation, in chunks of ``chunk_size``.
* BatchNorm: ``bn="eval"`` interpolates the running statistics with the weights and
  evaluates in eval mode; ``bn="batch"`` normalises each chunk with its own statistics (the
  authors' choice).
* A barrier is crossed on a segment when some interior point has a loss above the loss at
  both ends, by more than ``tol``; its height is the largest interior loss minus the larger
  end (0 when there is no barrier).
* Linear-mode-connectivity barrier between two networks: ``above_line`` is
  max over alpha of L(alpha) - ((1 - alpha) L(0) + alpha L(1)) (Entezari et al. 2022);
  ``above_mean`` is max L(alpha) - (L(0) + L(1)) / 2 (Ainsworth et al., Git Re-Basin).

How it saves work
-----------------
The authors saved the whole model after every iteration and interpolated afterwards. Here
nothing is saved: the recorder keeps the previous iterate only, shares each segment end with
the next segment, and, when the network starts with a Linear or convolutional layer, uses
that the first layer's output is linear in the weights: at ``(1 - alpha) a + alpha b`` it is
``(1 - alpha) z_a + alpha z_b``, so the first layer runs once per iterate instead of once per
point, and its outputs are kept between steps when they fit in ``cache_bytes``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .files import write_atomic
from .params import BN_MODES, Params, check_evaluation, check_fits_model, clone_params, model_params
from .train import Callback

DEFAULT_ALPHAS = tuple(i / 10 for i in range(11))
AFFINE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_alphas(alphas) -> torch.Tensor:
    """``alphas`` as a float64 tensor, or ``ValueError`` unless increasing within [0, 1]."""
    values = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
    if len(values) == 0 or values.min() < 0 or values.max() > 1:
        raise ValueError(f"alphas must lie in [0, 1], got {values.tolist()}")
    if len(values) > 1 and not bool((values[1:] > values[:-1]).all()):
        raise ValueError(f"alphas must be strictly increasing, got {values.tolist()}")
    return values


def _check_curves(curves) -> np.ndarray:
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim == 0 or curves.shape[-1] < 3:
        raise ValueError(f"a curve needs at least 3 points (two ends and an interior point), got shape {curves.shape}")
    return curves


def _excess(curves: np.ndarray) -> np.ndarray:
    """Largest interior loss minus the larger end, per curve (last axis)."""
    return curves[..., 1:-1].max(axis=-1) - np.maximum(curves[..., 0], curves[..., -1])


def barrier_height(curve) -> float:
    """Largest interior loss minus the larger end loss; 0 when no interior point is above both ends.

    >>> barrier_height([1.0, 1.5, 2.5, 0.5])   # the interior peak 2.5 is 1.5 above the larger end
    1.5
    >>> barrier_height([2.0, 1.0, 0.5])        # downhill all the way: no barrier
    0.0
    """
    return float(max(0.0, _excess(_check_curves(curve))))


def crosses_barrier(curve, tol: float = 0.0) -> bool:
    """True when some interior point of the segment is above both ends by more than ``tol``.

    >>> crosses_barrier([1.0, 1.05, 0.5])
    True
    >>> crosses_barrier([1.0, 1.05, 0.5], tol=0.1)
    False
    """
    return bool(_excess(_check_curves(curve)) > tol)


def has_interior_minimum(curve) -> bool:
    """True when some interior point of the segment is below both ends (a valley between them)."""
    curve = _check_curves(curve)
    return bool(curve[..., 1:-1].min(axis=-1) < np.minimum(curve[..., 0], curve[..., -1]))


class _LineEngine:
    """Full-set losses at points ``(1 - alpha) a + alpha b`` of one model, sharing what can be shared.

    When the model is an ``nn.Sequential`` (possibly nested) whose first layer with
    parameters is affine (Linear or Conv), the first layer's outputs ``z`` are computed once
    per parameter point and interpolated; otherwise every point is a plain forward pass.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int, bn: str, cache_bytes: int):
        check_evaluation(x, y, chunk_size, bn)
        self.model, self.x, self.y, self.chunk_size, self.bn = model, x, y, chunk_size, bn
        self.chunks = [(start, min(start + chunk_size, len(x))) for start in range(0, len(x), chunk_size)]
        self.buffer_names = {name for name, _ in model.named_buffers()}
        self.split = self._split(model)
        self.cache_bytes = cache_bytes

    @staticmethod
    def _leaves(module: nn.Module, prefix: str = ""):
        """(name, module) in call order through nested ``nn.Sequential``; other modules are leaves."""
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                yield from _LineEngine._leaves(child, f"{prefix}{name}.")
        else:
            yield prefix[:-1], module

    def _split(self, model: nn.Module):
        """(parameter-free prefix, first affine layer, rest), each rest entry with its state names; or None."""
        if not isinstance(model, nn.Sequential):
            return None
        leaves = list(self._leaves(model))
        for i, (name, module) in enumerate(leaves):
            if next(iter(module.state_dict()), None) is None:
                continue
            if not isinstance(module, AFFINE_LAYERS):
                return None
            names = lambda n, m: [(local, f"{n}.{local}") for local in m.state_dict()]
            prefix = [m for _, m in leaves[:i]]
            rest = [(m, names(n, m)) for n, m in leaves[i + 1:]]
            return prefix, (module, names(name, module)), rest
        return None

    def _call(self, module: nn.Module, state: list, params: Params, h: torch.Tensor) -> torch.Tensor:
        if not state:
            return module(h)
        return functional_call(module, {local: params[full] for local, full in state}, (h,))

    def _batch_bn_copies(self, params: Params) -> Params:
        # Train-mode BatchNorm writes running statistics in place: hand it copies.
        return {k: v.clone() if k in self.buffer_names else v for k, v in params.items()}

    def first_layer(self, params: Params) -> list[torch.Tensor] | None:
        """The first affine layer's output on every chunk, if the model splits and it fits in the cache."""
        if self.split is None:
            return None
        prefix, (layer, state), _ = self.split
        with torch.no_grad():
            h = self.x[:1]
            for module in prefix:
                h = module(h)
            per_example = self._call(layer, state, params, h).numel()
            if per_example * len(self.x) * self.x.element_size() > self.cache_bytes:
                return None
            return [self._first(params, start, stop) for start, stop in self.chunks]

    def _first(self, params: Params, start: int, stop: int) -> torch.Tensor:
        prefix, (layer, state), _ = self.split
        h = self.x[start:stop]
        for module in prefix:
            h = module(h)
        return self._call(layer, state, params, h)

    def losses(self, a: Params, b: Params, alphas: torch.Tensor,
               z_a: list | None = None, z_b: list | None = None) -> torch.Tensor:
        """Mean loss over the whole set at each ``(1 - alpha) a + alpha b``, float64, on the CPU."""
        # With the first layer split off, only the later layers' tensors are interpolated.
        names = list(a) if self.split is None else [full for _, state in self.split[2] for _, full in state]
        points = [{k: torch.lerp(a[k], b[k], float(al)) if a[k].is_floating_point() else a[k] for k in names} for al in alphas]
        if self.bn == "batch":
            points = [self._batch_bn_copies(p) for p in points]
        totals = torch.zeros(len(alphas), dtype=torch.float64, device=self.x.device)
        was_training = self.model.training
        self.model.train(self.bn == "batch")
        try:
            with torch.no_grad():
                for c, (start, stop) in enumerate(self.chunks):
                    yc = self.y[start:stop]
                    if self.split is None:
                        for i, point in enumerate(points):
                            logits = functional_call(self.model, point, (self.x[start:stop],))
                            totals[i] += F.cross_entropy(logits, yc, reduction="sum")
                        continue
                    za = z_a[c] if z_a is not None else self._first(a, start, stop)
                    zb = z_b[c] if z_b is not None else self._first(b, start, stop)
                    for i, (alpha, point) in enumerate(zip(alphas, points)):
                        h = torch.lerp(za, zb, float(alpha))
                        for module, state in self.split[2]:
                            h = self._call(module, state, point, h)
                        totals[i] += F.cross_entropy(h, yc, reduction="sum")
        finally:
            self.model.train(was_training)
        return (totals / len(self.x)).cpu()


def interpolate(
    model: nn.Module,
    params_a: Params,
    params_b: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    *,
    chunk_size: int = 4096,
    bn: str = "eval",
) -> torch.Tensor:
    """Mean cross-entropy over the whole set ``(x, y)`` at each ``(1 - alpha) * a + alpha * b``.

    Returns a float64 CPU tensor of ``len(alphas)`` losses (nats). ``params_a`` and
    ``params_b`` are dicts covering the model's state (see :mod:`sgdlab.params`); the model
    itself is left untouched. See the module docstring for ``bn``.
    """
    check_fits_model(model, params_a, name="params_a")
    check_fits_model(model, params_b, name="params_b")
    alphas = check_alphas(alphas)
    engine = _LineEngine(model, x, y, chunk_size=chunk_size, bn=bn, cache_bytes=0)
    return engine.losses(params_a, params_b, alphas)


@dataclasses.dataclass
class LMCBarrier:
    """The loss barrier on the straight line between two networks, in nats, both ways of measuring it."""

    above_line: float   # max L(alpha) - ((1 - alpha) L(0) + alpha L(1))   (Entezari et al. 2022)
    above_mean: float   # max L(alpha) - (L(0) + L(1)) / 2                 (Ainsworth et al. 2023)
    alphas: np.ndarray
    curve: np.ndarray   # L(alpha) at each alpha


def lmc_barrier(model, params_a, params_b, x, y, alphas: Sequence[float] = tuple(i / 20 for i in range(21)), **options) -> LMCBarrier:
    """Linear-mode-connectivity barrier between two networks over the set ``(x, y)``.

    ``alphas`` must include 0 and 1 (default: 21 points); ``options`` go to :func:`interpolate`.
    """
    values = check_alphas(alphas)
    if values[0] != 0 or values[-1] != 1:
        raise ValueError(f"alphas must start at 0 and end at 1 for a barrier between two networks, got {values.tolist()}")
    curve = interpolate(model, params_a, params_b, x, y, values, **options).numpy()
    a = values.numpy()
    line = (1 - a) * curve[0] + a * curve[-1]
    return LMCBarrier(float((curve - line).max()), float(curve.max() - (curve[0] + curve[-1]) / 2), a, curve)


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
        ``floor_rises`` / ``floor_falls``: consecutive pairs of segments, both with an
        interior minimum, whose minimum went up / down by more than ``tol`` (a rise means SGD
        moved over a barrier, by the paper's three-iterate construction); ``mean_loss``: the
        mean full-set loss at the segment ends.
        """
        rows = []
        for epoch, curves in zip(self.epochs, self.curves):
            excess = _excess(curves)
            ends = np.maximum(curves[:, 0], curves[:, -1])
            inside = curves[:, 1:-1].min(axis=1) < np.minimum(curves[:, 0], curves[:, -1])
            floor = curves.min(axis=1)
            both = inside[1:] & inside[:-1]
            change = np.diff(floor)
            crossed = excess > tol
            rows.append(dict(
                epoch=epoch,
                steps=len(curves),
                barriers=int(crossed.sum()),
                max_relative_height=float((excess[crossed] / ends[crossed]).max()) if crossed.any() else 0.0,
                interior_minimum=float(inside.mean()),
                floor_rises=int((both & (change > tol)).sum()),
                floor_falls=int((both & (change < -tol)).sum()),
                mean_loss=float(curves[:, [0, -1]].mean()),
            ))
        return rows

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


class WalkRecorder(Callback):
    """Records, during training, the full-set loss between every pair of consecutive iterates.

    ``epochs`` lists the epochs to record, counting from 1; ``steps`` limits each to its
    first ``steps`` updates (``None``: the whole epoch). ``x``, ``y`` default to the whole
    training set (without augmentation). Keeps only the previous iterate, never a
    checkpoint per iteration; ``result`` is a :class:`WalkResult`. With ``save_to``, the
    result so far is written there (``.npz``) after every recorded epoch.
    Full-batch gradient descent records the same way: one step per epoch.
    """

    def __init__(self, epochs: Sequence[int] = (1,), *, steps: int | None = None, alphas: Sequence[float] = DEFAULT_ALPHAS,
                 x: torch.Tensor | None = None, y: torch.Tensor | None = None, chunk_size: int = 4096,
                 bn: str = "eval", cache_bytes: int = 2 ** 28, save_to: str | Path | None = None):
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
        self.engine = _LineEngine(model, x, y, **self.options)
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
        """The recorded epochs so far, as tensors (see :meth:`sgdlab.train.Callback.state_dict`)."""
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
                eval_examples: int | None = None, train_epochs: int | None = None, bn: str = "eval",
                save_to: str | Path | None = None, **train_options):
    """Train ``model`` with ``sgdlab.train`` and record the walk in ``epochs`` (counted from 1).

    Training runs until the last recorded epoch unless ``train_epochs`` says longer.
    ``eval_examples`` evaluates the interpolated losses on the first examples of the
    training set only (``None``: all of them, as in the paper). ``bn`` and ``save_to`` go
    to :class:`WalkRecorder`, ``train_options`` to :func:`sgdlab.train` (``checkpoint=``
    makes the run resumable). Returns ``(history, walk_result)``.
    """
    from .train import train

    check_eval_examples(eval_examples, dataset)
    keep = slice(0, eval_examples)
    recorder = WalkRecorder(epochs, steps=steps, x=dataset.x_train[keep], y=dataset.y_train[keep], bn=bn, save_to=save_to)
    history = train(model, dataset, lr=lr, batch_size=batch_size, epochs=max(max(recorder.epochs), train_epochs or 0),
                    callbacks=[recorder, *train_options.pop("callbacks", ())], **train_options)
    result = recorder.result
    result.config.update(arch=type(model).__name__, eval_examples=len(recorder.engine.x))
    return history, result

"""The loss along straight lines in weight space: interpolation and barriers.

``interpolate(model, a, b, x, y, alphas)`` evaluates the mean loss over the whole set
``(x, y)`` at ``(1 - alpha) * a + alpha * b``; :func:`barrier_height` and
:func:`crosses_barrier` read a curve; :func:`lmc_barrier` is the barrier between two networks.
:mod:`sgdlab.walk` evaluates such lines during training, between consecutive iterates.

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
When the network starts with a Linear or convolutional layer, :class:`LineEngine` uses
that the first layer's output is linear in the weights: at ``(1 - alpha) a + alpha b`` it is
``(1 - alpha) z_a + alpha z_b``, so the first layer runs once per iterate instead of once per
point, and its outputs are kept between steps when they fit in ``cache_bytes``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .params import Params, check_evaluation, check_fits_model, evaluation

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


def excess_over_ends(curves: np.ndarray) -> np.ndarray:
    """Largest interior loss minus the larger end, per curve (last axis)."""
    return curves[..., 1:-1].max(axis=-1) - np.maximum(curves[..., 0], curves[..., -1])


def barrier_height(curve) -> float:
    """Largest interior loss minus the larger end loss; 0 when no interior point is above both ends.

    >>> barrier_height([1.0, 1.5, 2.5, 0.5])   # the interior peak 2.5 is 1.5 above the larger end
    1.5
    >>> barrier_height([2.0, 1.0, 0.5])        # downhill all the way: no barrier
    0.0
    """
    return float(max(0.0, excess_over_ends(_check_curves(curve))))


def crosses_barrier(curve, tol: float = 0.0) -> bool:
    """True when some interior point of the segment is above both ends by more than ``tol``.

    >>> crosses_barrier([1.0, 1.05, 0.5])
    True
    >>> crosses_barrier([1.0, 1.05, 0.5], tol=0.1)
    False
    """
    return bool(excess_over_ends(_check_curves(curve)) > tol)


def valley_inside(curves) -> np.ndarray:
    """Bool per segment (the last axis holds a segment's losses, alpha = 0 to 1): some interior
    point is below both ends, so the lowest point lies strictly inside (a valley between them).

    >>> valley_inside(np.array([[1.0, 0.5, 2.0], [1.0, 1.0, 2.0], [2.0, 1.5, 1.0]]))
    array([ True, False, False])
    """
    curves = _check_curves(curves)
    return curves[..., 1:-1].min(axis=-1) < np.minimum(curves[..., 0], curves[..., -1])


def has_interior_minimum(curve) -> bool:
    """True when some interior point of the one segment ``curve`` is below both ends (:func:`valley_inside`)."""
    return bool(valley_inside(curve))


class LineEngine:
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
                yield from LineEngine._leaves(child, f"{prefix}{name}.")
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
        with evaluation(self.model, self.bn), torch.no_grad():
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
    engine = LineEngine(model, x, y, chunk_size=chunk_size, bn=bn, cache_bytes=0)
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
        raise ValueError(f"alphas must start at 0 and end at 1 for a barrier between two networks, got "
                         f"{values.tolist()}")
    curve = interpolate(model, params_a, params_b, x, y, values, **options).numpy()
    a = values.numpy()
    line = (1 - a) * curve[0] + a * curve[-1]
    return LMCBarrier(float((curve - line).max()), float(curve.max() - (curve[0] + curve[-1]) / 2), a, curve)

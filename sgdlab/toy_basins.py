"""Which minimum GD and SGD end in, on a 2-D toy loss with a narrow and a wide well.

The two minima are found by GD from a point in each well. A GD step multiplies the distance
to a minimum of curvature ``lambda`` by ``1 - lr * lambda``, so GD can stay in the narrow
minimum only below its stability limit ``2 / lambda``; the curvature is measured along the
first axis (the line through both wells) by central differences. Runs from many starts at
every rate of a grid (:func:`sgdlab.toy.sweep_rates`) are then sorted by where they end.
Everything is float64 on the CPU, as in :mod:`sgdlab.toy`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .toy import DTYPE, ToyLoss, run_gd, share_near, sweep_rates


def curvature_along(loss, point, direction, h: float = 1e-4) -> float:
    """The second derivative of ``loss`` at ``point`` along the unit vector ``direction``
    (loss units per squared parameter unit), by central differences with step ``h``:
    ``(f(x + h d) - 2 f(x) + f(x - h d)) / h^2``."""
    point = torch.as_tensor(point, dtype=DTYPE)
    e = h * torch.as_tensor(direction, dtype=DTYPE)
    return (loss(point + e) - 2 * loss(point) + loss(point - e)).item() / h ** 2


@dataclasses.dataclass
class TwoMinima:
    """What :func:`two_minima` returns: the narrow and the wide minimum (shape (2,) each,
    parameter units) and ``narrow_limit``, GD's stability limit ``2 / lambda`` in the narrow
    one (a learning rate)."""

    narrow: torch.Tensor
    wide: torch.Tensor
    narrow_limit: float


def two_minima(loss: ToyLoss, pair) -> TwoMinima:
    """The minima GD reaches (rate 0.01, 3,000 steps) from the two points of ``pair`` (shape
    (2, 2): a point in the narrow well first, then one in the wide well), and the narrow
    one's stability limit, its curvature measured along the first axis."""
    narrow, wide = run_gd(loss, pair, lr=0.01, steps=3000)[-1]
    curvature = curvature_along(loss, narrow, [1.0, 0.0])
    return TwoMinima(narrow=narrow, wide=wide, narrow_limit=2 / curvature)


def where_runs_end(loss: ToyLoss, starts, lrs, noise: float, minima: TwoMinima, *, steps: int = 1000,
                   seed: int = 0, narrow_radius: float = 0.3, wide_radius: float = 0.8):
    """Runs from every start at every rate (:func:`sgdlab.toy.sweep_rates`; ``noise = 0``:
    GD) and returns ``(sweep, in_narrow, in_wide)``: the :class:`~sgdlab.toy.RateSweep` and,
    per rate, the share of the runs whose last point lies within ``narrow_radius`` of the
    narrow minimum, and within ``wide_radius`` of the wide one (arrays of shape (len(lrs),))."""
    sweep = sweep_rates(loss, starts, lrs, noise, steps=steps, seed=seed)
    ends = sweep.paths[-1]                                                   # (lrs, starts, 2)
    in_narrow = np.array([share_near(e, minima.narrow, narrow_radius) for e in ends])
    in_wide = np.array([share_near(e, minima.wide, wide_radius) for e in ends])
    return sweep, in_narrow, in_wide

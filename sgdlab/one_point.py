"""One-point convexity along a training path: does the negative gradient point towards the end?

Kleinberg, Li and Yuan's guarantee for SGD needs the loss to be *one-point convex* with
respect to a target ``x*``: ``<-grad L(y), x* - y> >= c |x* - y|^2`` for some ``c > 0`` at the
points ``y`` SGD visits. On a network we take the run's last point ``x_T`` as the target and
measure the left side, the *pull towards* ``x_T`` (:func:`pull_towards`), at the start of every
epoch (recorded by :class:`sgdlab.recorders.IterateRecorder` with ``epochs=True``) and at random points around each
(:func:`pull_along_path`).

Conventions: ``L`` is the mean cross-entropy over ``(x, y)`` (nats), its gradient that of
:func:`sgdlab.hessian.gradient` (BatchNorm in eval mode). Only trainable weights move:
BatchNorm's running statistics are not directions, so distances and random directions
cover the parameters only, and the statistics stay those of the point.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .hessian import gradient
from .params import Params, distance, norm


def pull_towards(model: torch.nn.Module, point: Params, target: Params, x: torch.Tensor, y: torch.Tensor) -> float:
    """``<-grad L(point), target - point>`` over the trainable parameters (nats).

    Positive when a small step down the gradient at ``point`` moves towards ``target``: it is
    minus the slope of the loss along the straight line from ``point`` to ``target``, at
    ``point`` (nats per unit of the line's parameter, 0 at ``point`` and 1 at ``target``).
    """
    g = gradient(model, point, x, y)
    return -sum((g[name] * (target[name] - point[name])).sum() for name in g).item()


class PullAlongPath(NamedTuple):
    """What :func:`pull_along_path` returns; each field has one entry per epoch start ``x_t``."""

    on_path: np.ndarray   # <-grad L(x_t), x_T - x_t> (nats)
    nearby: np.ndarray    # the smallest pull towards x_T at the random points around x_t (nats)
    squared: np.ndarray   # |x_T - x_t|^2 over the trainable weights (squared parameter units)


def pull_along_path(model: torch.nn.Module, points: list[Params], x: torch.Tensor, y: torch.Tensor, *,
                    directions: int, fraction: float, seed: int) -> PullAlongPath:
    """The pull towards the last of ``points`` (``x_T``), at every other point ``x_t`` and around it.

    ``points``: the iterates at the start of every epoch and after the last, as
    ``IterateRecorder(epochs=True).iterates`` holds them. Around each ``x_t``, ``directions``
    random points at distance ``fraction * |x_T - x_t|`` (Gaussian directions over the
    trainable weights, drawn in order from one generator on ``x``'s device seeded with
    ``seed``); ``nearby`` keeps the smallest of their pulls. ``c = on_path / squared`` is the
    one-point convexity constant that each ``x_t`` allows.
    """
    if len(points) < 2:
        raise ValueError(f"points must hold at least two states (a path and its end), got {len(points)}")
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise ValueError(f"directions must be a positive int, got directions={directions!r}")
    if not fraction >= 0:
        raise ValueError(f"fraction must be a non-negative number, got fraction={fraction!r}")
    target = points[-1]
    weights = dict(model.named_parameters()).keys()
    generator = torch.Generator(x.device).manual_seed(seed)
    on_path, nearby, squared = (np.zeros(len(points) - 1) for _ in range(3))
    for t, x_t in enumerate(points[:-1]):
        on_path[t] = pull_towards(model, x_t, target, x, y)
        d = distance(*({k: p[k] for k in weights} for p in (x_t, target)))
        squared[t] = d ** 2
        values = []
        for _ in range(directions):
            u = {name: torch.randn(x_t[name].shape, generator=generator, device=x.device) for name in weights}
            scale = fraction * d / norm(u)
            moved = {**x_t, **{name: x_t[name] + scale * u[name] for name in weights}}
            values.append(pull_towards(model, moved, target, x, y))
        nearby[t] = min(values)
    return PullAlongPath(on_path, nearby, squared)

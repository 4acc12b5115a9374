"""How well a mini-batch gradient points along the full gradient, during training.

The full gradient ``g`` is the mean of the per-example gradients of a set of ``N`` examples
(:func:`sgdlab.per_example.per_example_gradients`, BatchNorm in eval mode). A mini-batch gradient
``g_B`` is the mean over ``B`` of them, drawn without replacement as :func:`sgdlab.train`
draws within an epoch. We measure ``cos(g_B, g)``: positive means that a step along ``-g_B``
goes, to first order, downhill on the loss over the whole set.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from .models import make_model
from .per_example import per_example_gradients
from .recorders import IterateRecorder
from .train import train


def batch_cosine(per_example: torch.Tensor, rows) -> float:
    """The cosine between the mean of the rows ``rows`` of ``per_example`` (shape (N, P)), a
    mini-batch gradient, and the mean of all its rows, the full gradient (dimensionless)."""
    G = per_example.double()
    rows = torch.as_tensor(rows, device=G.device)
    return torch.nn.functional.cosine_similarity(G[rows].mean(0), G.mean(0), dim=0).item()


def minibatch_gradients(per_example: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """Mini-batch gradients, shape (draws, P): row ``d`` is the mean of the rows ``picks[d]``
    (an index tensor of shape (draws, B), B distinct rows each) of ``per_example`` (shape
    (N, P)), computed as one product with a (draws, N) matrix of weights ``1/B``, in
    ``per_example``'s dtype and on its device."""
    draws, B = picks.shape
    weights = torch.zeros(draws, len(per_example), dtype=per_example.dtype, device=per_example.device)
    return weights.scatter_(1, picks, 1.0 / B) @ per_example


def finite_population_variance(spread, n: int, batch_size):
    """``E|g_B - g|^2`` for mini-batches of ``batch_size`` distinct examples of ``n``, drawn
    uniformly without replacement: ``spread * (n - B) / (B * (n - 1))``, where ``spread`` is
    ``tr(Sigma)``, the mean squared distance of one example's gradient from their mean ``g``
    (the units of a squared gradient). With replacement it would be ``spread / B``; the factor
    ``(n - B) / (n - 1)`` is the finite-population correction, 0 at ``B = n``. ``batch_size``
    may be an array (broadcast).

    >>> finite_population_variance(2.0, 5, 5), finite_population_variance(2.0, 5, 1)
    (0.0, 2.0)
    """
    return spread * (n - batch_size) / (batch_size * (n - 1))


@dataclasses.dataclass
class MinibatchError:
    """What :func:`minibatch_error` returns, one entry per size in ``batch_sizes``.

    ``variance[i]``: the mean over the draws of ``|g_B - g|^2`` (squared gradient units);
    ``bias[i]``: ``|mean of the draws' g_B - g| / |g|`` (dimensionless: sampling error only,
    the estimate being unbiased); ``spread``: ``tr(Sigma)``, the mean of ``|g_i - g|^2`` over
    the ``examples`` rows; ``full``: ``g`` itself, shape (P,)."""

    batch_sizes: list
    variance: np.ndarray
    bias: np.ndarray
    spread: float
    full: torch.Tensor
    draws: int
    examples: int


def minibatch_error(per_example: torch.Tensor, batch_sizes: Sequence[int], draws: int,
                    generator: torch.Generator) -> MinibatchError:
    """How far mini-batch gradients fall from the full gradient, by batch size.

    ``per_example``: shape (N, P), one example's gradient per row (float64 for a network: the
    squared distances are small differences); the full gradient ``g`` is the mean of the rows.
    For each ``B`` in ``batch_sizes``, ``draws`` mini-batches of ``B`` distinct rows are drawn
    without replacement, as :func:`sgdlab.train` draws within an epoch: the first ``B`` of a
    ``torch.randperm(N)`` per draw, from ``generator`` (on ``per_example``'s device), which
    moves on. Compare ``variance`` with :func:`finite_population_variance`.
    """
    n = len(per_example)
    if any(not 1 <= B <= n for B in batch_sizes):
        raise ValueError(f"batch_sizes must lie in [1, N={n}], got {list(batch_sizes)}")
    if draws < 1:
        raise ValueError(f"draws must be a positive int, got draws={draws!r}")
    G = per_example
    full = G.mean(0)
    variance, bias = [], []
    for B in batch_sizes:
        picks = torch.stack([torch.randperm(n, generator=generator, device=G.device)[:B]
                             for _ in range(draws)])                             # (draws, B)
        estimates = minibatch_gradients(G, picks)                               # (draws, P): each g_B
        variance.append(((estimates - full) ** 2).sum(1).mean().item())
        bias.append(((estimates.mean(0) - full).norm() / full.norm()).item())
    return MinibatchError(batch_sizes=list(batch_sizes), variance=np.array(variance), bias=np.array(bias),
                          spread=((G - full) ** 2).sum(1).mean().item(), full=full, draws=draws, examples=n)


def minibatch_cosines(per_example: torch.Tensor, batch_sizes: Sequence[int], draws: int, *,
                      seed: int = 0) -> dict[int, torch.Tensor]:
    """Cosines between ``draws`` mini-batch gradients of each size and the full gradient.

    ``per_example``: shape (N, P), one example's gradient per row; the full gradient is the
    mean of the rows. For each ``B`` in ``batch_sizes`` (1 <= B <= N), ``draws`` mini-batches
    of ``B`` distinct examples are drawn uniformly (a random permutation per draw, from a
    generator on ``per_example``'s device seeded with ``seed``). Returns ``{B: cosines}``,
    each a float64 tensor of shape (draws,) on that device (dimensionless, in [-1, 1]),
    computed in ``per_example``'s dtype (float32 for a network: about 1e-6 of rounding).
    """
    n = len(per_example)
    if any(not 1 <= B <= n for B in batch_sizes):
        raise ValueError(f"batch_sizes must lie in [1, N={n}], got {list(batch_sizes)}")
    if draws < 1:
        raise ValueError(f"draws must be a positive int, got draws={draws!r}")
    G = per_example  # its own dtype: a float64 copy of a network's N x P matrix would double its memory
    full = G.double().mean(0).to(G.dtype)
    generator = torch.Generator(G.device).manual_seed(seed)
    out = {}
    for B in batch_sizes:
        picks = torch.rand(draws, n, generator=generator, device=G.device).argsort(1)[:, :B]  # (draws, B)
        estimates = minibatch_gradients(G, picks)                                       # (draws, P): each g_B
        out[B] = torch.nn.functional.cosine_similarity(estimates, full[None], dim=1).double()
    return out


@dataclasses.dataclass
class CosinesOverTraining:
    """What :func:`cosines_over_training` returns: ``cosines[i, j]`` holds the ``draws`` cosines
    (shape (draws,)) at update ``steps[i]`` for mini-batches of ``batch_sizes[j]`` examples;
    ``gradient_norm[i]`` is ``|g|`` there (nats per parameter unit); ``examples`` is N."""

    steps: list
    batch_sizes: list
    cosines: np.ndarray         # (len(steps), len(batch_sizes), draws)
    gradient_norm: np.ndarray   # (len(steps),)
    examples: int


def cosines_over_training(arch: str, dataset, *, lr: float, batch_size: int, steps: Sequence[int],
                          batch_sizes: Sequence[int] = (1, 10, 100), draws: int = 200,
                          examples: int | None = None, seed: int = 0) -> CosinesOverTraining:
    """Train ``make_model(arch, dataset, seed=seed)`` with :func:`sgdlab.train` (SGD, constant
    ``lr``, mini-batches of ``batch_size``, ``max(steps)`` updates) and, at the parameters after
    each update count in ``steps`` (0 = the initialisation), measure :func:`minibatch_cosines`
    on the first ``examples`` training examples (all by default): the full gradient is theirs.
    """
    steps = sorted(set(int(s) for s in steps))
    if not steps or steps[0] < 0:
        raise ValueError(f"steps must be non-negative update counts, got {steps}")
    n = dataset.n_train if examples is None else min(examples, dataset.n_train)
    model = make_model(arch, dataset, seed=seed).to(dataset.device)
    keeper = IterateRecorder(at=[s for s in steps if s > 0])  # and the initialisation, always
    if steps[-1] > 0:
        train(model, dataset, lr=lr, batch_size=batch_size, steps=steps[-1], seed=seed, progress=False,
              evaluate=False, callbacks=[keeper])
    else:
        keeper.on_train_begin(model, dataset)
    kept = dict(zip(keeper.steps, keeper.iterates))
    x, y = dataset.x_train[:n], dataset.y_train[:n]
    cosines, norms = [], []
    for s in steps:
        G = per_example_gradients(model, kept[s], x, y)
        by_size = minibatch_cosines(G, batch_sizes, draws, seed=seed)
        cosines.append(torch.stack([by_size[B] for B in batch_sizes]).cpu().numpy())
        norms.append(G.double().mean(0).norm().item())
    return CosinesOverTraining(steps=steps, batch_sizes=list(batch_sizes), cosines=np.stack(cosines),
                               gradient_norm=np.array(norms), examples=n)

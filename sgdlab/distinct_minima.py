"""How many distinct minima: the permuted copies of one network, and a census of trained ones.

Two counts from the nonconvexity chapter. Every network has many copies with the same
loss, one per reordering of each hidden layer's units (:func:`log10_permuted_copies`).
Among networks trained from different seeds, two runs sit in *distinct* minima when the
loss rises by at least ``threshold`` (nats) above the straight line between them
(:func:`sgdlab.landscape.lmc_barrier`'s ``above_line``); :func:`largest_separated_set` counts how many
runs are pairwise separated, and :func:`census` does so before and after aligning each pair
by weight matching, which removes the barriers that only permutation symmetry put there.

Barrier matrices are symmetric numpy arrays of shape (runs, runs), in nats, with zeros on
the diagonal.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .landscape import lmc_barrier
from .params import Params, full_loss, model_params, num_parameters
from .permutation import PermutationSpec, apply_permutation, permutation_spec, weight_matching


def log10_permuted_copies(spec: PermutationSpec) -> float:
    """log10 of the number of reorderings of a network's hidden units: ``log10(prod_p sizes[p]!)``.

    Each permutation of ``spec`` (``spec.sizes``: name -> units) reorders its units
    independently, so a network has ``prod_p sizes[p]!`` permuted copies (itself included),
    all computing the same function.
    """
    return sum(math.lgamma(n + 1) for n in spec.sizes.values()) / math.log(10)


def largest_separated_set(barriers, threshold: float) -> int:
    """The size of the largest set of runs whose every pairwise barrier is at least ``threshold``.

    ``barriers``: symmetric (runs, runs) array (nats); the diagonal is ignored. A maximum
    clique search by brute force: sets of growing size are tried until none is separated
    (a larger separated set would contain one of this size). Fine for the ten-odd runs of a
    census; the cost grows as 2^runs. One run alone always counts as 1.
    """
    barriers = np.asarray(barriers, dtype=float)
    if barriers.ndim != 2 or barriers.shape[0] != barriers.shape[1] or len(barriers) < 1:
        raise ValueError(f"barriers must be a square (runs, runs) array, got shape {barriers.shape}")
    runs = len(barriers)
    separated, best = barriers >= threshold, 1
    for size in range(2, runs + 1):
        groups = map(list, itertools.combinations(range(runs), size))
        if any(separated[np.ix_(g, g)][np.triu_indices(size, 1)].all() for g in groups):
            best = size
        else:
            break
    return best


def pairwise_barriers(model: torch.nn.Module, nets: list[Params], x: torch.Tensor, y: torch.Tensor,
                      spec: PermutationSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The barriers between every pair of ``nets`` on ``(x, y)``: as trained, and after weight matching.

    ``model`` gives the architecture (``nets`` are parameter dicts of it); ``spec`` defaults
    to its :func:`sgdlab.permutation.permutation_spec`. For ``i < j``, the matched barrier is the one
    between ``nets[i]`` and ``nets[j]`` permuted by :func:`sgdlab.permutation.weight_matching` onto
    ``nets[i]``. Returns ``(raw, matched)``, each (runs, runs), symmetric, in nats
    (``above_line`` of :func:`sgdlab.landscape.lmc_barrier`), zeros on the diagonal.
    """
    spec = permutation_spec(model) if spec is None else spec
    runs = len(nets)
    raw, matched = np.zeros((runs, runs)), np.zeros((runs, runs))
    for i, j in itertools.combinations(range(runs), 2):
        raw[i, j] = raw[j, i] = lmc_barrier(model, nets[i], nets[j], x, y).above_line
        aligned = apply_permutation(spec, weight_matching(spec, nets[i], nets[j]), nets[j])
        matched[i, j] = matched[j, i] = lmc_barrier(model, nets[i], aligned, x, y).above_line
    return raw, matched


def census(model: torch.nn.Module, nets: list[Params], x: torch.Tensor, y: torch.Tensor,
           threshold: float) -> dict:
    """How many distinct minima ``nets`` (trained runs of ``model``'s architecture) sit in.

    Returns a dict: ``parameters`` (the trainable parameters of one net), ``losses`` (each
    net's mean loss on ``(x, y)``, nats, an array), ``as_trained`` and ``after_matching``
    (:func:`largest_separated_set` of the :func:`pairwise_barriers` at ``threshold`` nats),
    ``median_raw`` and ``median_matched`` (the median barrier over the pairs, nats).
    """
    raw, matched = pairwise_barriers(model, nets, x, y)
    pairs = np.triu_indices(len(nets), 1)
    return dict(
        parameters=num_parameters(model_params(model, buffers=False)),
        losses=np.array([full_loss(model, p, x, y) for p in nets]),
        as_trained=largest_separated_set(raw, threshold),
        after_matching=largest_separated_set(matched, threshold),
        median_raw=np.median(raw[pairs]),
        median_matched=np.median(matched[pairs]),
    )

"""Counting distinct minima: permuted copies, the largest separated set, and the census."""

import itertools
import math

import numpy as np
import pytest

import sgdlab
from sgdlab import distinct_minima


def separated_by_every_subset(barriers, threshold):
    """The reference: every subset of runs tried, largest first (no early stop)."""
    runs = len(barriers)
    for size in range(runs, 1, -1):
        for group in itertools.combinations(range(runs), size):
            if all(barriers[i][j] >= threshold for i, j in itertools.combinations(group, 2)):
                return size
    return 1


def test_log10_permuted_copies_counts_the_reorderings_of_every_layer(device):
    data = sgdlab.load_dataset("moons", device=device)
    spec = sgdlab.permutation_spec(sgdlab.make_model("mlp", data, hidden=(3, 4)))
    assert sorted(spec.sizes.values()) == [3, 4]
    assert distinct_minima.log10_permuted_copies(spec) == pytest.approx(math.log10(6 * 24))


def test_the_largest_separated_set_is_the_planted_clique():
    # runs 1, 3, 4 and 6 are pairwise far apart; every other pair is close
    barriers = np.full((7, 7), 0.01)
    for i, j in itertools.combinations((1, 3, 4, 6), 2):
        barriers[i, j] = barriers[j, i] = 0.2
    assert distinct_minima.largest_separated_set(barriers, 0.05) == 4
    assert distinct_minima.largest_separated_set(barriers, 0.5) == 1      # nothing separated: one minimum
    assert distinct_minima.largest_separated_set(np.zeros((1, 1)), 0.05) == 1


def test_the_largest_separated_set_agrees_with_trying_every_subset():
    rng = np.random.default_rng(0)
    for _ in range(30):
        upper = np.triu(rng.uniform(0, 0.1, (8, 8)), 1)
        barriers = upper + upper.T
        assert (distinct_minima.largest_separated_set(barriers, 0.05)
                == separated_by_every_subset(barriers, 0.05))


def test_a_square_barrier_matrix_is_required():
    with pytest.raises(ValueError, match="square"):
        distinct_minima.largest_separated_set(np.zeros((2, 3)), 0.05)


def test_a_permuted_copy_is_no_barrier_after_matching(device):
    data = sgdlab.load_dataset("moons", device=device)
    model = sgdlab.make_model("mlp", data, seed=0, hidden=(6,))
    w = sgdlab.clone_params(sgdlab.model_params(model))
    spec = sgdlab.permutation_spec(model)
    copy = sgdlab.apply_permutation(spec, sgdlab.random_permutation(spec, seed=3), w)
    nets = [w, copy, w]
    raw, matched = distinct_minima.pairwise_barriers(model, nets, data.x_train, data.y_train)
    assert raw.shape == matched.shape == (3, 3)
    assert (raw == raw.T).all() and (np.diag(raw) == 0).all()
    assert raw[0, 2] == 0.0 and raw[0, 1] == raw[1, 2]                     # w with itself: no barrier
    assert np.abs(matched).max() < 1e-6                                    # the copy is matched back onto w
    c = distinct_minima.census(model, nets, data.x_train, data.y_train, threshold=1e-4)
    assert c["after_matching"] == 1 and c["median_matched"] < 1e-6
    assert c["parameters"] == sgdlab.num_parameters(sgdlab.model_params(model, buffers=False))
    assert np.allclose(c["losses"], sgdlab.full_loss(model, w, data.x_train, data.y_train))

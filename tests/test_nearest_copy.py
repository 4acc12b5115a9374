"""The nearest permuted copy (sgdlab.nearest_copy), checked against every permutation of a small network."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import sgdlab
from sgdlab.nearest_copy import (
    _best_non_identity, dead_units, distance_scale, firing_rates, nearest_permuted_copy, nearest_swap_rises,
    nearest_transposition, swap_midpoint_losses, swap_table, transposition_distances,
)
from sgdlab.permutation import apply_permutation, identity_permutation, permutation_spec


def small_mlp(hidden, seed=0, batchnorm=False):
    """An MLP on 3 inputs with random weights (and BatchNorm statistics), small enough to enumerate its permutations."""
    model = nn.Sequential()
    sizes = (3, *hidden)
    for k, (a, b) in enumerate(zip(sizes, sizes[1:]), start=1):
        model.add_module(f"fc{k}", nn.Linear(a, b))
        if batchnorm:
            model.add_module(f"bn{k}", nn.BatchNorm1d(b))
        model.add_module(f"relu{k}", nn.ReLU())
    model.add_module("out", nn.Linear(sizes[-1], 2))
    g = torch.Generator().manual_seed(seed)
    params = {k: torch.randn(t.shape, generator=g).abs() if k.endswith("running_var") else torch.randn(t.shape, generator=g)
              for k, t in model.state_dict().items() if t.is_floating_point()}
    params.update({k: t for k, t in model.state_dict().items() if not t.is_floating_point()})
    return model, permutation_spec(model), params


def every_copy(spec, params):
    """(perm, distance) for every non-identity permutation of the spec: the brute-force reference."""
    names = list(spec.sizes)
    for choice in itertools.product(*(itertools.permutations(range(spec.sizes[p])) for p in names)):
        perm = {p: torch.tensor(pi) for p, pi in zip(names, choice)}
        if all(torch.equal(pi, torch.arange(len(pi))) for pi in perm.values()):
            continue
        yield perm, sgdlab.distance(params, apply_permutation(spec, perm, params))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_transposition_distances_are_the_distances_to_the_swapped_copies(seed, batchnorm):
    model, spec, params = small_mlp((4, 5), seed, batchnorm)
    _, _, other = small_mlp((4, 5), seed + 10, batchnorm)
    for name, n in spec.sizes.items():
        for to in (None, other):
            d = transposition_distances(spec, params, name, to=to)
            for i, j in itertools.product(range(n), repeat=2):
                pi = torch.arange(n)
                pi[[i, j]] = pi[[j, i]]
                copy = apply_permutation(spec, {**identity_permutation(spec), name: pi}, params)
                assert d[i, j].item() == pytest.approx(sgdlab.distance(params if to is None else to, copy), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_one_hidden_layer_nearest_transposition_is_the_nearest_of_all_permuted_copies(seed):
    model, spec, params = small_mlp((4,), seed)
    reference = min(d for _, d in every_copy(spec, params))  # all 23 non-identity permutations
    best = nearest_transposition(spec, params)
    assert best.distance == pytest.approx(reference, rel=1e-9)
    perm, d = nearest_permuted_copy(spec, params)
    assert d == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("batchnorm", [False, True])
def test_two_hidden_layers_weight_matching_without_the_identity_finds_the_nearest_copy(seed, batchnorm):
    model, spec, params = small_mlp((4, 4), seed, batchnorm)
    copies = list(every_copy(spec, params))  # 24 * 24 - 1 permutations
    reference = min(d for _, d in copies)
    perm, d = nearest_permuted_copy(spec, params)
    assert not all(torch.equal(pi, torch.arange(len(pi))) for pi in perm.values())
    assert d == pytest.approx(sgdlab.distance(params, apply_permutation(spec, perm, params)), rel=1e-12)
    assert reference - 1e-9 <= d <= nearest_transposition(spec, params).distance + 1e-9
    assert d == pytest.approx(reference, rel=1e-9)  # on these networks the local search is exact


def test_the_best_non_identity_assignment_is_the_second_best_when_the_identity_is_best():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        gain = torch.randn(5, 5, generator=g).double().numpy()
        gain[np.arange(5), np.arange(5)] += 3  # the identity is the best assignment
        scores = {pi: gain[np.arange(5), list(pi)].sum() for pi in itertools.permutations(range(5))}
        del scores[tuple(range(5))]
        best = _best_non_identity(gain)
        assert gain[np.arange(5), best].sum() == pytest.approx(max(scores.values()), rel=1e-12)
        assert not np.array_equal(best, np.arange(5))


def test_nearest_transposition_among_a_set_of_units_only_swaps_two_of_them():
    model, spec, params = small_mlp((6,), 0)
    among = {"fc1": torch.tensor([True, False, True, True, False, False])}
    best = nearest_transposition(spec, params, among=among)
    d = transposition_distances(spec, params, "fc1")
    allowed = [(i, j) for i in (0, 2, 3) for j in (0, 2, 3) if i < j]
    assert (best.i, best.j) in allowed and best.distance == pytest.approx(min(d[i, j].item() for i, j in allowed))
    assert nearest_transposition(spec, params, among={"fc1": torch.tensor([True] + [False] * 5)}) is None


def test_dead_units_are_the_ones_that_never_fire_or_are_never_read():
    model, spec, params = small_mlp((5,), 0)
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    params["fc1.weight"][1] = 0.0
    params["fc1.bias"][1] = -1.0          # never fires
    params["out.weight"][:, 3] = 0.0      # fires, but nothing reads it
    dead = dead_units(model, params, x)["fc1"]
    assert dead[1] and dead[3] and not dead[[0, 2, 4]].any()
    # swapping two dead units that never fire leaves the function the same all along the straight line
    params["fc1.weight"][4] = 0.0
    params["fc1.bias"][4] = -2.0
    pi = torch.tensor([0, 4, 2, 3, 1])
    copy = apply_permutation(spec, {"fc1": pi}, params)
    model.eval()
    for alpha in (0.0, 0.3, 0.7, 1.0):
        mixed = sgdlab.params.lerp(params, copy, alpha)
        torch.testing.assert_close(functional_call(model, mixed, (x,)), functional_call(model, params, (x,)))


def test_firing_rates_count_the_examples_on_which_each_unit_fires():
    model, spec, params = small_mlp((5,), 0)
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    hidden = torch.relu(x @ params["fc1.weight"].T + params["fc1.bias"])
    torch.testing.assert_close(firing_rates(model, params, x, chunk_size=7)["fc1"], (hidden > 0).float().mean(0))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_swap_midpoint_losses_are_the_losses_halfway_to_the_swapped_copies(batchnorm):
    model, spec, params = small_mlp((4, 5), 0, batchnorm)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(30, 3, generator=g), torch.randint(0, 2, (30,), generator=g)
    pairs = [(0, 1), (2, 4), (3, 1)]
    losses = swap_midpoint_losses(model, params, x, y, [("fc2", i, j) for i, j in pairs])
    for (i, j), loss in zip(pairs, losses):
        pi = torch.arange(5)
        pi[[i, j]] = pi[[j, i]]
        copy = apply_permutation(spec, {**identity_permutation(spec), "fc2": pi}, params)
        assert loss == pytest.approx(sgdlab.full_loss(model, sgdlab.params.lerp(params, copy, 0.5), x, y), rel=1e-6)


def test_swap_table_lists_every_swap_once_with_its_distance_and_kind():
    model, spec, params = small_mlp((4, 5), 0)
    _, _, other = small_mlp((4, 5), 1)
    dead = {"fc1": torch.tensor([True, False, True, False]), "fc2": torch.zeros(5, dtype=torch.bool)}
    table = swap_table(spec, params, to=other, dead=dead)
    assert len(table["i"]) == 6 + 10 and (table["i"] < table["j"]).all()
    for name, i, j, d, kind in zip(table["name"], table["i"], table["j"], table["distance"], table["kind"]):
        assert d == transposition_distances(spec, params, name, to=other)[i, j].item()
        assert kind == ("dead" if name == "fc1" and (i, j) == (0, 2) else "mixed" if name == "fc1" and dead["fc1"][[i, j]].any()
                        else "live")


def test_nearest_swap_rises_are_the_midpoint_losses_of_the_nearest_swaps_minus_the_loss_at_the_network():
    model, spec, params = small_mlp((4, 5), 0)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(30, 3, generator=g), torch.randint(0, 2, (30,), generator=g)
    table = swap_table(spec, params)
    order, rise = nearest_swap_rises(model, params, x, y, table, count=4)
    by_distance = sorted(range(len(table["distance"])), key=lambda k: table["distance"][k])[:4]  # the naive sort
    assert list(order) == by_distance
    for k, r in zip(order, rise):
        halfway = swap_midpoint_losses(model, params, x, y, [(table["name"][k], table["i"][k], table["j"][k])])[0]
        assert r == pytest.approx(halfway - sgdlab.full_loss(model, params, x, y), abs=1e-12)
    assert len(nearest_swap_rises(model, params, x, y, table)[0]) == len(table["distance"])


def test_distance_scale_sees_a_planted_hop_dead_units_and_an_aligned_other_run():
    model, spec, w_N = small_mlp((4, 5), 0)
    w_N["fc1.bias"][3] = -100.0  # unit 3 of fc1 never fires
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(4))
    hop = {**identity_permutation(spec), "fc2": torch.tensor([1, 0, 2, 3, 4])}
    w_M = apply_permutation(spec, hop, w_N)  # the same function, two units swapped
    w_other = apply_permutation(spec, sgdlab.random_permutation(spec, 7), w_M)
    found = distance_scale(model, w_N, w_M, w_other, x, random=3)
    assert found.d_NM == pytest.approx(transposition_distances(spec, w_N, "fc2")[0, 1].item(), rel=1e-9)
    assert not found.found_identity and found.scale["d(w_N, w_M) after weight matching"] == pytest.approx(0, abs=1e-6)
    assert found.scale["d(w_M, another run) after weight matching"] == pytest.approx(0, abs=1e-6)
    dead = dead_units(model, w_N, x)
    assert dead["fc1"][3] and found.units == 9
    assert found.dead_share == pytest.approx(sum(int(mask.sum()) for mask in dead.values()) / 9)
    assert ("nearest swap of two dead units" in found.scale) == (found.nearest["dead"] is not None)
    naive = [sgdlab.distance(w_N, apply_permutation(spec, {**identity_permutation(spec), name: torch.tensor(
        [j if u == i else i if u == j else u for u in range(spec.sizes[name])])}, w_N))
        for name, i, j, kind in zip(*(found.swaps[k] for k in ("name", "i", "j", "kind"))) if kind == "live"]
    assert found.scale["nearest swap of two live units"] == pytest.approx(min(naive), rel=1e-9)
    assert found.closer == pytest.approx(np.mean(np.array(naive) < found.d_NM))
    assert len(found.scale["3 random permutations of w_N"]) == 3 and min(found.from_M) == pytest.approx(0, abs=1e-6)


def test_bad_arguments_of_the_nearest_copy_tools_are_refused_by_name():
    model, spec, params = small_mlp((4,), 0)
    with pytest.raises(ValueError, match="permutation 'fc9' is not in this spec"):
        transposition_distances(spec, params, "fc9")
    with pytest.raises(ValueError, match="max_iter=0"):
        nearest_permuted_copy(spec, params, max_iter=0)
    with pytest.raises(ValueError, match="one bool per unit"):
        nearest_transposition(spec, params, among={"fc1": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="does not name two units"):
        swap_midpoint_losses(model, params, torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), [("fc1", 0, 4)])
    with pytest.raises(ValueError, match="no two hidden units"):
        one = small_mlp((1,), 0)
        nearest_permuted_copy(one[1], one[2])

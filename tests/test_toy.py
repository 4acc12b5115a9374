"""Toy losses: gradients, the smoothed loss, and the GD / SGD runners."""

import math

import pytest
import torch

from sgdlab import toy

LOSSES = {
    "wells_1d": toy.wells_1d(),
    "wells_2d": toy.wells_2d(),
    "escape_2d": toy.escape_2d(),
    "rippled_1d": toy.RippledBasin(1),
    "rippled_2d": toy.RippledBasin(2),
}


@pytest.mark.parametrize("name", LOSSES)
def test_gradient_matches_central_finite_differences(name):
    loss = LOSSES[name]
    x = 2 * torch.randn(20, loss.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-6
    numeric = torch.stack([(loss(x + h * e) - loss(x - h * e)) / (2 * h) for e in torch.eye(loss.dim, dtype=torch.float64)], -1)
    assert torch.allclose(loss.gradient(x), numeric, atol=1e-6, rtol=1e-6)
    # the closed form agrees with autograd through the value
    assert torch.allclose(loss.gradient(x), toy.ToyLoss.gradient(loss, x), atol=1e-12)


def test_wells_have_minima_of_different_depths_where_gd_stops():
    loss = toy.wells_1d()
    ends = toy.run_gd(loss, torch.linspace(-5, 5, 201), lr=0.1, steps=3000)[-1, :, 0]
    minima = torch.unique(ends.round(decimals=3))
    assert len(minima) == 4
    assert loss.gradient(ends[:, None]).abs().max() < 1e-6  # GD has stopped at stationary points
    depths = loss(minima[:, None])
    assert len(torch.unique(depths.round(decimals=3))) == 4


def test_smoothed_matches_a_monte_carlo_average():
    loss = toy.wells_2d()
    lr, noise = 0.05, 6.0  # width 0.3
    axis = torch.linspace(-1.0, 1.0, 81)
    grid = toy.smoothed(loss, (axis, axis), lr, noise)
    z = torch.randn(400_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for i, j in [(0, 0), (40, 60), (80, 20)]:
        point = torch.stack([axis[i], axis[j]]).double()
        samples = loss(point - lr * noise * z)
        error = samples.std() / math.sqrt(len(z))
        assert abs(grid[i, j] - samples.mean()) < 5 * error + 1e-4, (i, j, grid[i, j], samples.mean(), error)


def test_smoothed_rippled_basin_matches_its_closed_form():
    loss = toy.RippledBasin(1, ripple=0.1, wavelength=0.25)
    x = torch.linspace(-2, 2, 2001)
    for lr, noise in [(0.01, 2.0), (0.02, 3.0), (0.05, 1.0)]:
        exact = loss.smoothed_exact(x[:, None], lr * noise)
        assert torch.allclose(toy.smoothed(loss, x, lr, noise), exact, atol=1e-6)


@pytest.mark.parametrize("name", ["wells_1d", "rippled_2d"])
def test_smoothing_with_zero_noise_returns_the_loss(name):
    loss = LOSSES[name]
    axis = torch.linspace(-3, 3, 61)
    axes = axis if loss.dim == 1 else (axis, axis)
    assert torch.equal(toy.smoothed(loss, axes, lr=0.1, noise=0.0), loss.on_grid(axes))


def test_gd_step_is_the_gradient_step():
    loss = toy.escape_2d()
    x0 = torch.tensor([[0.3, -0.2], [1.0, 2.0]], dtype=torch.float64)
    path = toy.run_gd(loss, x0, lr=0.1, steps=2)
    assert path.shape == (3, 2, 2)
    assert torch.allclose(path[1], x0 - 0.1 * loss.gradient(x0))
    assert torch.allclose(path[2], path[1] - 0.1 * loss.gradient(path[1]))


def test_sgd_noise_has_the_stated_standard_deviation():
    loss = toy.GaussianWells(centers=[[0.0]], depths=[0.0], widths=[1.0], bowl=0.0)  # flat: the path is the noise
    path = toy.run_sgd(loss, torch.zeros(20_000), lr=0.1, noise=3.0, steps=1, seed=0)
    moves = (path[1] - path[0]).flatten()
    assert abs(moves.std().item() - 0.3) < 0.01 and abs(moves.mean().item()) < 0.01


def test_sgd_is_reproducible_with_a_seed_and_seeds_differ():
    loss = toy.RippledBasin(2)
    x0 = torch.full((50, 2), 2.0)
    a = toy.run_sgd(loss, x0, lr=0.01, noise=3.0, steps=100, seed=7)
    b = toy.run_sgd(loss, x0, lr=0.01, noise=3.0, steps=100, seed=7)
    c = toy.run_sgd(loss, x0, lr=0.01, noise=3.0, steps=100, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(torch.unique(a[-1, :, 0])) == 50  # every start gets its own noise


def test_per_start_settings_equal_separate_runs_without_noise():
    loss = toy.wells_1d()
    lrs = torch.tensor([0.05, 0.2])
    together = toy.run_gd(loss, torch.tensor([1.0, 1.0]), lr=lrs, steps=50)
    for k, lr in enumerate(lrs.tolist()):
        alone = toy.run_gd(loss, torch.tensor([1.0]), lr=lr, steps=50)
        assert torch.allclose(together[:, k], alone[:, 0])


def test_every_keeps_every_kth_point():
    loss = toy.RippledBasin(1)
    full = toy.run_sgd(loss, torch.ones(3), lr=0.01, noise=1.0, steps=20, seed=0)
    sparse = toy.run_sgd(loss, torch.ones(3), lr=0.01, noise=1.0, steps=20, seed=0, every=5)
    assert torch.equal(sparse, full[::5])


def test_gd_stays_in_a_sharp_minimum_and_sgd_leaves_it():
    loss = toy.RippledBasin(1)
    start = torch.full((200,), 2.0)
    assert toy.share_near(toy.run_gd(loss, start, lr=0.01, steps=1000)[-1], [0.0], 0.5) == 0.0
    assert toy.share_near(toy.run_sgd(loss, start, lr=0.01, noise=4.0, steps=1000, seed=0)[-1], [0.0], 0.5) > 0.5


def test_share_near_counts_points_within_the_radius():
    points = torch.tensor([[0.0, 0.0], [0.5, 0.0], [3.0, 4.0], [math.nan, 0.0]])
    assert toy.share_near(points, [0.0, 0.0], 1.0) == 0.5


@pytest.mark.parametrize("call, words", [
    (lambda: toy.run_sgd(toy.wells_2d(), torch.zeros(3, 3), 0.1, 1.0, 10, 0), "x0 must have shape"),
    (lambda: toy.run_sgd(toy.wells_2d(), torch.zeros(3, 2), -0.1, 1.0, 10, 0), "lr must be a positive"),
    (lambda: toy.run_sgd(toy.wells_2d(), torch.zeros(3, 2), 0.1, -1.0, 10, 0), "noise must be a non-negative"),
    (lambda: toy.run_sgd(toy.wells_2d(), torch.zeros(3, 2), 0.1, 1.0, 0, 0), "steps must be a positive int"),
    (lambda: toy.run_sgd(toy.wells_2d(), torch.zeros(3, 2), 0.1, 1.0, 10, 0.5), "seed must be an int"),
    (lambda: toy.run_sgd(toy.wells_2d(), torch.zeros(3, 2), torch.ones(2), 1.0, 10, 0), "one number per start"),
    (lambda: toy.run_gd(toy.wells_1d(), torch.zeros(3), 0.1, 10, every=3), "multiple of every"),
    (lambda: toy.run_gd(toy.wells_1d(), torch.tensor([math.inf]), 0.1, 10), "x0 must be finite"),
    (lambda: toy.smoothed(toy.wells_2d(), torch.linspace(0, 1, 5), 0.1, 1.0), "pair of 1-D tensors"),
    (lambda: toy.smoothed(toy.wells_1d(), torch.tensor([0.0, 1.0, 3.0]), 0.1, 1.0), "evenly spaced"),
    (lambda: toy.smoothed(toy.wells_1d(), torch.linspace(0, 1, 5), 0.1, math.nan), "noise must be"),
    (lambda: toy.RippledBasin(3), "dim must be 1 or 2"),
    (lambda: toy.GaussianWells([[0.0, 0.0]], [1.0, 2.0], [1.0]), "depths must have one entry per well"),
    (lambda: toy.wells_2d()(torch.zeros(4, 3)), "last axis of size 2"),
])
def test_bad_input_is_refused_with_a_message(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def _minima(loss):
    return toy.run_gd(loss, torch.tensor([[-1.0, 0.0], [1.5, 0.0]]), lr=0.002, steps=20000)[-1]


def test_narrow_and_wide_minima_have_equal_depth_or_the_chosen_order():
    equal = toy.narrow_and_wide_2d()
    ends = _minima(equal)
    assert torch.allclose(ends, torch.tensor([[-0.988, 0.0], [1.406, 0.0]], dtype=torch.float64), atol=2e-3)
    assert abs(equal(ends[0]) - equal(ends[1])) < 1e-4
    # widths as named: the narrow minimum is far more curved (second difference along x)
    h = 1e-3
    curv = [((equal(e + torch.tensor([h, 0.0])) - 2 * equal(e) + equal(e - torch.tensor([h, 0.0]))) / h ** 2).item()
            for e in ends]
    assert curv[0] > 10 * curv[1]
    deeper = toy.narrow_and_wide_2d(2.0)
    d = deeper(_minima(deeper))
    assert d[0] < d[1] - 0.5
    assert torch.allclose(toy.narrow_and_wide_2d(0.6)(ends), toy.escape_2d()(ends))


def test_time_near_counts_rows_per_start():
    path = torch.tensor([[[0.0], [5.0]], [[0.2], [5.0]], [[3.0], [0.1]], [[math.nan], [0.0]]])
    assert toy.time_near(path, [0.0], 0.5).tolist() == [0.5, 0.5]


def test_sweep_rates_equals_separate_runs_and_picks_the_lowest_tail_loss():
    loss = toy.wells_1d()
    starts = torch.linspace(-4, 4, 9)
    sweep = toy.sweep_rates(loss, starts, [0.05, 0.5, 3.0], 0.0, steps=100, seed=0, every=10)
    for k, lr in enumerate(sweep.lrs):
        alone = toy.run_gd(loss, starts, lr=lr, steps=100, every=10)
        assert torch.allclose(sweep.paths[:, k], alone)
        expected = loss(alone[6:]).mean()                     # rows after 50 of 100 steps
        assert torch.isclose(sweep.score[k], expected)
    low = sweep.score.min()
    assert sweep.best == max(lr for lr, s in zip(sweep.lrs, sweep.score) if s <= low + 1e-3)
    assert sweep.score[sweep.lrs.index(3.0)] > low + 0.1          # the largest rate is not a tie here
    assert torch.equal(sweep.best_paths, sweep.paths[:, sweep.lrs.index(sweep.best)])


def test_sweep_rates_breaks_ties_towards_the_larger_rate():
    bowl = toy.GaussianWells(centers=[[0.0]], depths=[0.0], widths=[1.0], bowl=1.0)  # x^2 / 2: all converge to 0
    sweep = toy.sweep_rates(bowl, torch.ones(3), [0.1, 0.5, 1.0], 0.0, steps=200, seed=0)
    assert sweep.best == 1.0


@pytest.mark.parametrize("name", ["wells_1d", "wells_2d", "escape_2d"])
def test_laplacian_matches_finite_differences_of_the_gradient(name):
    loss = LOSSES[name]
    x = 2 * torch.randn(15, loss.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h = 1e-5
    numeric = sum((loss.gradient(x + h * e) - loss.gradient(x - h * e))[:, k] / (2 * h)
                  for k, e in enumerate(torch.eye(loss.dim, dtype=torch.float64)))
    assert torch.allclose(loss.laplacian(x), numeric, atol=1e-6)


def test_ripple_factor_is_the_amplitude_of_the_smoothed_ripples():
    loss = toy.RippledBasin(1, basin=1e-9, ripple=0.1, wavelength=0.25)  # basin negligible
    width = 0.04
    top = loss.smoothed_exact(torch.tensor([[0.125]]), width) - loss.smoothed_exact(torch.tensor([[0.0]]), width)
    assert abs(top.item() / (2 * loss.ripple) - loss.ripple_factor(width)) < 1e-6


def test_grid_points_are_the_points_on_grid_evaluates_in_the_same_order():
    axes = (torch.linspace(-1, 1, 4), torch.linspace(0, 2, 3))
    points = toy.grid_points(axes)
    assert points.shape == (12, 2) and points.dtype == torch.float64
    expected = [(a, b) for a in axes[0].tolist() for b in axes[1].tolist()]  # row-major, by hand
    assert torch.equal(points, torch.tensor(expected, dtype=torch.float64))
    loss = LOSSES["wells_2d"]
    assert torch.equal(loss(points), loss.on_grid(axes).reshape(-1))
    assert toy.grid_points(axes[0], dim=1).shape == (4, 1)
    with pytest.raises(ValueError, match="evenly spaced"):
        toy.grid_points((torch.tensor([0.0, 1.0, 3.0]), axes[1]))


def test_count_minima_finds_the_planted_minima_of_a_cosine():
    # cos(x) on [0, 7 * 2 pi] has its minima at pi, 3 pi, ..., 13 pi: seven of them
    assert toy.count_minima(torch.cos(torch.linspace(0, 14 * math.pi, 2001))) == 7
    assert toy.count_minima(torch.linspace(0, 1, 50)) == 0                 # monotone: none
    assert toy.count_minima([3.0, 1.0, 1.0, 1.0, 2.0]) == 1                # a flat bottom counts once
    assert toy.count_minima([1.0, 2.0, 3.0]) == 0                          # the edges never count


def test_count_minima_agrees_with_gd_on_the_rippled_basin():
    # another way: run GD with a tiny step from every grid point and count where it stops
    loss = toy.RippledBasin(1)
    x = torch.linspace(-3, 3, 1201)
    ends = toy.run_gd(loss, x[1:-1], lr=1e-3, steps=3000)[-1, :, 0]
    assert toy.count_minima(loss.on_grid(x)) == len(torch.unique(ends.round(decimals=3)))


def test_run_sgd_grid_is_run_sgd_on_the_settings_laid_out_by_hand():
    loss, lrs, noises, seeds = LOSSES["rippled_1d"], [0.01, 0.05], [0.0, 2.0, 4.0], 3
    path = toy.run_sgd_grid(loss, 2.0, lrs, noises, seeds, steps=40, seed=5, every=10)
    assert path.shape == (5, 2 * 3 * 3, 1)
    settings = [(lr, noise) for lr in lrs for noise in noises for _ in range(seeds)]
    by_hand = toy.run_sgd(loss, torch.full((len(settings),), 2.0), [s[0] for s in settings],
                          [s[1] for s in settings], steps=40, seed=5, every=10)
    assert torch.equal(path, by_hand)
    # noise 0 is GD: those runs are the GD path at their rate
    for k, lr in enumerate(lrs):
        gd = toy.run_gd(loss, torch.tensor([2.0]), lr=lr, steps=40, every=10)
        assert torch.equal(path.reshape(5, 2, 3, seeds)[:, k, 0], gd.expand(5, seeds, 1)[..., 0])
    with pytest.raises(ValueError, match="one point"):
        toy.run_sgd_grid(loss, [1.0, 2.0], lrs, noises, seeds, steps=10, seed=0)

"""train_seeds: several seeds at once reproduce sequential sgdlab.train runs."""

import math

import pytest
import torch

import sgdlab
import numpy as np

from scipy.special import betainc

from sgdlab.seeds import (gap_standard_error, group_mean_spread, largest_differences, nudge_up_one_ulp, pooled_sd,
                          seeds_needed, spread_of_group_means, standard_deviation_interval, train_one_by_one,
                          train_seeds, variance_ratio)

SEEDS = (0, 3, 7)


def sequential(data, epochs, lr=0.1, batch_size=100, weight_decay=0.0, **options):
    models = [sgdlab.make_model("mlp", data, seed=s, **options) for s in SEEDS]
    histories = [sgdlab.train(m, data, lr=lr, batch_size=batch_size, epochs=epochs, weight_decay=weight_decay, seed=s,
                              progress=False) for m, s in zip(models, SEEDS)]
    return models, histories


@pytest.mark.parametrize("batchnorm", [False, True])
def test_batched_seeds_match_sequential_runs(digits, batchnorm):
    models, histories = sequential(digits, 4, weight_decay=1e-3, batchnorm=batchnorm)
    result = train_seeds("mlp", digits, SEEDS, lr=0.1, batch_size=100, epochs=4, weight_decay=1e-3, batchnorm=batchnorm)
    for i, (model, expected, got) in enumerate(zip(models, histories, result.histories)):
        assert got.config == expected.config
        assert got.steps == expected.steps == 4 * 14
        for field in ("train_loss", "test_loss", "step_loss"):
            assert getattr(got, field) == pytest.approx(getattr(expected, field), abs=1e-5), field
        assert got.epoch == expected.epoch
        params = result.params_of(i)
        assert params.keys() == model.state_dict().keys()
        for name, value in model.state_dict().items():
            assert torch.allclose(params[name], value, atol=1e-5), name  # BatchNorm statistics included
    assert result.final("train_loss") == pytest.approx([h.train_loss[-1] for h in histories], abs=1e-5)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_batched_cnn_seeds_match_sequential_runs(digits, batchnorm):
    result = train_seeds("cnn", digits, [2, 5], lr=0.05, batch_size=200, epochs=1, channels=(4, 8), batchnorm=batchnorm)
    for i, seed in enumerate([2, 5]):
        model = sgdlab.make_model("cnn", digits, seed=seed, channels=(4, 8), batchnorm=batchnorm)
        expected = sgdlab.train(model, digits, lr=0.05, batch_size=200, epochs=1, seed=seed, progress=False)
        got = result.histories[i]
        for field in ("train_loss", "test_loss", "step_loss"):
            assert getattr(got, field) == pytest.approx(getattr(expected, field), abs=1e-5), field
        for name, value in model.state_dict().items():
            assert torch.allclose(result.params_of(i)[name], value, atol=1e-5), name


def test_seeds_differ_and_order_is_kept(digits):
    result = train_seeds("mlp", digits, [5, 1], lr=0.1, batch_size=200, epochs=1)
    alone = train_seeds("mlp", digits, [1], lr=0.1, batch_size=200, epochs=1)
    assert result.histories[1].step_loss == pytest.approx(alone.histories[0].step_loss, abs=1e-6)
    assert result.histories[0].step_loss[0] != pytest.approx(result.histories[1].step_loss[0], abs=1e-3)


def test_full_batch_is_gradient_descent(digits):
    result = train_seeds("mlp", digits, [0], lr=0.5, batch_size="full", epochs=3, hidden=(8,))
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(8,))
    expected = sgdlab.train(model, digits, lr=0.5, batch_size="full", epochs=3, progress=False)
    assert result.histories[0].step_loss == pytest.approx(expected.step_loss, abs=1e-6)


def test_a_diverging_seed_stops_alone_as_train_would(digits):
    lr = 20.0  # diverges within a few steps on the quick MLP
    model = sgdlab.make_model("mlp", digits, seed=0)
    with pytest.warns(RuntimeWarning, match="diverged"):
        expected = sgdlab.train(model, digits, lr=lr, batch_size=100, epochs=1, progress=False)
        result = train_seeds("mlp", digits, [0], lr=lr, batch_size=100, epochs=1)
    got = result.histories[0]
    assert got.diverged_at == expected.diverged_at is not None
    assert got.stopped_because == expected.stopped_because
    assert got.step_loss == pytest.approx(expected.step_loss, abs=1e-4) and got.epoch == expected.epoch == []
    assert all(math.isfinite(v) for v in result.params_of(0)["out.weight"].flatten().tolist())


@pytest.mark.parametrize("arguments, message", [
    (dict(seeds=[]), "seeds must be a non-empty"),
    (dict(seeds=[0, 0]), "distinct"),
    (dict(seeds=[0.5]), r"seeds\[0\] must be an int"),
    (dict(lr=0.0), "lr must be"),
    (dict(lr=math.nan), "lr must be"),
    (dict(batch_size=0), "batch_size must be"),
    (dict(batch_size=10**6), "batch_size must be"),
    (dict(epochs=0), "epochs must be"),
    (dict(weight_decay=-1.0), "weight_decay must be"),
    (dict(diverge_factor=1.0), "diverge_factor"),
    (dict(hidden="64"), "hidden"),
    (dict(dataset="digits"), "sgdlab Dataset"),
])
def test_bad_input_is_refused_with_its_name(digits, arguments, message):
    call = dict(arch="mlp", dataset=digits, seeds=[0, 1], lr=0.1, batch_size=100, epochs=1)
    call.update(arguments)
    with pytest.raises(ValueError, match=message):
        train_seeds(**call)


def test_group_means_use_every_value_once_in_order():
    values = np.arange(10.0)
    assert spread_of_group_means(values, 3).tolist() == [1.0, 4.0, 7.0]       # the tenth value is left out
    assert spread_of_group_means(values, 1).tolist() == values.tolist()
    with pytest.raises(ValueError, match="n must be an int in 1..10"):
        spread_of_group_means(values, 11)


def test_spread_of_group_means_of_independent_draws_is_sigma_over_root_n_within_the_interval():
    """Simulated independent normal draws: the measured spread of the means of disjoint
    groups falls in standard_deviation_interval about 95% of the time (a reference by simulation)."""
    rng = np.random.default_rng(0)
    sigma, n, groups, trials = 2.0, 5, 8, 4000
    low, high = standard_deviation_interval(sigma / math.sqrt(n), groups)
    spreads = np.array([spread_of_group_means(rng.normal(0, sigma, n * groups), n).std(ddof=1) for _ in range(trials)])
    coverage = float(((low <= spreads) & (spreads <= high)).mean())
    assert abs(coverage - 0.95) < 0.015
    assert abs(float(np.median(spreads)) / (sigma / math.sqrt(n)) - 1) < 0.05
    with pytest.raises(ValueError, match="groups must be an int of at least 2"):
        standard_deviation_interval(1.0, 1)


def test_group_mean_spread_matches_a_loop_over_disjoint_groups():
    values = np.random.default_rng(1).normal(3.0, 2.0, 40)
    spread, band, inside = group_mean_spread(values, [1, 4, 10])
    sigma = values.std(ddof=1)
    for i, n in enumerate([1, 4, 10]):
        means = [values[k:k + n].mean() for k in range(0, 40, n)]
        assert spread[i] == pytest.approx(np.std(means, ddof=1))
        assert band[i] == pytest.approx(standard_deviation_interval(sigma / math.sqrt(n), 40 // n))
        assert inside[i] == (band[i, 0] <= spread[i] <= band[i, 1])
    assert spread[0] == pytest.approx(sigma)                                   # n = 1: the seeds themselves


def test_seeds_needed_gives_eighty_percent_power_in_simulation():
    """A reference by simulation: with n = seeds_needed(gap, sd) seeds of each of two normal
    settings, a two-sided z-test at the 5% level tells them apart in about 80% of trials."""
    rng = np.random.default_rng(0)
    gap, sd = 0.5, 1.0
    n = seeds_needed(gap, sd)
    assert n == 63                                                             # 2 * 2.8^2 / 0.25 = 62.7, up
    a = rng.normal(0.0, sd, (4000, n)).mean(1)
    b = rng.normal(gap, sd, (4000, n)).mean(1)
    power = float((np.abs(b - a) / (sd * math.sqrt(2 / n)) > 1.96).mean())
    assert abs(power - 0.8) < 0.03
    with pytest.raises(ValueError, match="gap must be positive"):
        seeds_needed(0.0, 1.0)


def test_pooled_sd_and_gap_standard_error_on_planted_samples():
    a, b = np.array([1.0, 3.0]), np.array([0.0, 4.0, 8.0])                    # variances 2 and 16
    assert pooled_sd(a, a + 5) == pytest.approx(math.sqrt(2))
    assert gap_standard_error(a, b) == pytest.approx(math.sqrt(2 / 2 + 16 / 3))


def test_variance_ratio_p_value_is_the_f_tail_computed_from_the_incomplete_beta():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 2.0, 12), rng.normal(0, 1.0, 20)
    ratio, p = variance_ratio(a, b)
    assert ratio == pytest.approx(a.var(ddof=1) / b.var(ddof=1))
    d1, d2 = 11, 19                                                            # P(F > x) = I_{d2/(d2+d1 x)}(d2/2, d1/2)
    assert p == pytest.approx(betainc(d2 / 2, d1 / 2, d2 / (d2 + d1 * ratio)))
    assert variance_ratio(a, a)[1] == pytest.approx(0.5)                       # equal spread, equal sizes: the median


def test_largest_differences_and_a_one_ulp_nudge():
    def run(loss, accuracy):
        return sgdlab.callbacks.History(config={}, steps_per_epoch=1, train_loss=[9.0, loss], test_accuracy=accuracy)

    a = [run(0.5, [0.1, 0.9]), run(0.2, [0.5, 0.5])]
    b = [run(0.25, [0.1, 0.8]), run(0.2, [0.7, 0.5])]
    assert largest_differences(a, b) == pytest.approx((0.25, 0.2))
    model = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    assert nudge_up_one_ulp(model) is model
    for old, new in zip(before, model.parameters()):
        assert np.array_equal(new.detach().numpy(), np.nextafter(old.numpy(), np.inf))


def test_one_by_one_runs_are_what_train_seeds_reproduces(digits):
    alone = train_one_by_one("mlp", digits, [1, 0], lr=0.1, batch_size=200, epochs=1, progress=False)
    together = train_seeds("mlp", digits, [1, 0], lr=0.1, batch_size=200, epochs=1)
    for expected, got in zip(alone, together.histories):
        assert got.step_loss == pytest.approx(expected.step_loss, abs=1e-5)

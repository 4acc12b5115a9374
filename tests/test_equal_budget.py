"""equal_budget: timing, per-method rate tuning, weight snapshots and principal routes."""

import numpy as np
import pytest
import torch

import sgdlab
from sgdlab import equal_budget


def test_tuning_keeps_the_rate_that_does_not_diverge_and_reports_what_train_gives(digits):
    tuning = equal_budget.tune_each("mlp", digits, [0], (0.1, 1e4), {"SGD": (200, 1)})
    assert tuning.tuned == {"SGD": 0.1}
    assert tuning.mean_loss["SGD", 1e4] > 100 * tuning.mean_loss["SGD", 0.1]     # diverged, stopped: worst
    model = sgdlab.make_model("mlp", digits, seed=0)                              # the reference: one sgdlab.train run
    sgdlab.train(model, digits, lr=0.1, batch_size=200, epochs=1, seed=0, progress=False, evaluate=False)
    params = sgdlab.model_params(model)
    loss, _ = sgdlab.loss_and_accuracy(model, params, digits.x_train, digits.y_train)
    _, accuracy = sgdlab.loss_and_accuracy(model, params, digits.x_test, digits.y_test)
    assert tuning.final["SGD", 0.1][0] == pytest.approx([loss, 1 - accuracy], abs=1e-5)


def test_seconds_per_step_times_each_batch_size(digits):
    per_step = equal_budget.seconds_per_step("mlp", digits, [10, digits.n_train], lr=0.1, steps=3, warmup=1)
    assert list(per_step) == [10, digits.n_train]
    assert all(0 < s < 10 for s in per_step.values())


def test_routes_in_a_planted_plane_are_fully_explained_and_keep_their_distances():
    rng = np.random.default_rng(0)
    basis = torch.linalg.qr(torch.tensor(rng.normal(size=(20, 2))))[0].T     # two orthonormal directions in R^20
    offset = torch.tensor(rng.normal(size=20))
    a = torch.tensor(rng.normal(size=(6, 2))) @ basis + offset
    b = torch.tensor(rng.normal(size=(4, 2))) @ basis + offset
    pca = equal_budget.principal_routes({"a": a, "b": b})
    assert pca.explained == pytest.approx(1.0)
    assert pca.projected["a"].shape == (6, 1, 2)
    for label, points in (("a", a), ("b", b)):                                  # in-plane: distances are kept
        flat = pca.projected[label][:, 0]
        assert torch.cdist(flat, flat) == pytest.approx(torch.cdist(points, points), abs=1e-9)
    same = equal_budget.principal_routes({"a": a, "twice": offset + 2 * (a - offset)})
    assert same.same_way == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two routes"):
        equal_budget.principal_routes({"a": a})

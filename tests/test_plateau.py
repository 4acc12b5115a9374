"""Training past the plateau (sgdlab.plateau), checked against the two training runs done by hand."""

import pytest
import torch

import sgdlab
from sgdlab.plateau import train_past_plateau


def test_both_phases_are_two_plain_training_runs_with_seeds_seed_and_seed_plus_one(digits, tmp_path):
    options = dict(lr=0.1, batch_size=50, epochs=1, weight_decay=1e-3)
    run = train_past_plateau(sgdlab.make_model("mlp", digits, seed=0, hidden=(8,)), digits, seed=3,
                             snapshots=tmp_path / "s", every=10, **options)
    by_hand = sgdlab.make_model("mlp", digits, seed=0, hidden=(8,))
    before = sgdlab.train(by_hand, digits, seed=3, **options)
    w_N = sgdlab.clone_params(sgdlab.model_params(by_hand))
    after = sgdlab.train(by_hand, digits, seed=4, **options)
    assert run["before"].train_loss == before.train_loss and run["after"].train_loss == after.train_loss
    for name, t in sgdlab.model_params(by_hand).items():
        torch.testing.assert_close(run["w_N"][name], w_N[name])
        torch.testing.assert_close(run["w_M"][name], t)
    assert run["trajectory"].steps[-1] <= after.steps and run["trajectory"].distances(0)[0] == 0
    assert sgdlab.distance(run["w_N"], run["w_M"]) > 0  # w_N is a copy, not the model's storage


def test_snapshots_without_every_are_refused_by_name(digits, tmp_path):
    with pytest.raises(ValueError, match="needs every="):
        train_past_plateau(sgdlab.make_model("mlp", digits, seed=0, hidden=(8,)), digits, lr=0.1, batch_size=50,
                           epochs=1, snapshots=tmp_path)

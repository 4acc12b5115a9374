"""Per-example gradients (sgdlab.per_example) and mini-batch cosines (sgdlab.gradient_noise)."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sgdlab
from sgdlab import gradient_noise


def _digits_subset(n=40):
    data = sgdlab.load_dataset("digits")
    return data, data.x_train[:n], data.y_train[:n]


def test_per_example_gradients_of_a_batchnorm_model_are_the_eval_mode_gradients_one_by_one():
    data, x, y = _digits_subset(12)
    model = sgdlab.make_model("mlp", data, seed=0, hidden=(16, 8), batchnorm=True)
    sgdlab.train(model, data, lr=0.1, batch_size=50, steps=5, seed=0, progress=False, evaluate=False)
    params = sgdlab.model_params(model)
    assert any(t.dtype == torch.long for t in params.values())  # num_batches_tracked is there
    rows = sgdlab.per_example_gradients(model, params, x, y, chunk_size=5)
    model.eval()
    names = [name for name, _ in model.named_parameters()]
    for i in (0, 7, 11):  # reference: autograd on the module itself, one example at a time
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        expected = torch.cat([dict(model.named_parameters())[n].grad.flatten() for n in names])
        assert torch.allclose(rows[i], expected, atol=1e-6)
    model.train()
    # buffers untouched: eval mode does not update the running statistics
    after = sgdlab.model_params(model)
    assert all(torch.equal(params[k], after[k]) for k in params)


def test_cosines_of_the_whole_set_are_one_and_of_single_examples_are_the_rows():
    g = torch.randn(30, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = gradient_noise.minibatch_cosines(g, [1, 30], draws=50, seed=1)
    assert torch.allclose(out[30], torch.ones(50, dtype=torch.float64))
    per_row = F.cosine_similarity(g, g.mean(0)[None], dim=1)
    assert all(torch.isclose(per_row, c).any() for c in out[1])   # each draw is one row's cosine
    assert len(torch.unique(out[1])) > 10                           # and the draws differ


def test_cosines_match_a_loop_over_explicit_batches():
    g = torch.randn(20, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.5
    out = gradient_noise.minibatch_cosines(g, [4], draws=6, seed=3)[4]
    picks = torch.rand(6, 20, generator=torch.Generator().manual_seed(3)).argsort(1)[:, :4]
    for d in range(6):
        batch = g[picks[d]].mean(0)
        assert len(set(picks[d].tolist())) == 4                    # without replacement
        assert torch.isclose(out[d], batch @ g.mean(0) / (batch.norm() * g.mean(0).norm()))
        assert abs(gradient_noise.batch_cosine(g, picks[d]) - out[d].item()) < 1e-12


def test_cosines_over_training_keep_the_initial_point_and_grow_with_the_batch():
    data = sgdlab.load_dataset("digits")
    result = gradient_noise.cosines_over_training("mlp", data, lr=0.1, batch_size=100, steps=[0, 10],
                                                  batch_sizes=[1, 100], draws=20, examples=300)
    assert result.cosines.shape == (2, 2, 20) and result.examples == 300
    assert (result.cosines[:, 1].mean(-1) > result.cosines[:, 0].mean(-1)).all()
    assert ((result.cosines >= -1 - 1e-9) & (result.cosines <= 1 + 1e-9)).all()


def test_minibatch_error_matches_a_loop_over_the_same_batches():
    g = torch.randn(12, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = gradient_noise.minibatch_error(g, [3, 12], draws=7, generator=torch.Generator().manual_seed(4))
    again = torch.Generator().manual_seed(4)                                    # the same draws, one by one
    full = g.mean(0)
    for i, B in enumerate([3, 12]):
        batches = [g[torch.randperm(12, generator=again)[:B]].mean(0) for _ in range(7)]
        assert out.variance[i] == pytest.approx(sum(((b - full) ** 2).sum().item() for b in batches) / 7)
        assert out.bias[i] == pytest.approx(((sum(batches) / 7 - full).norm() / full.norm()).item())
    assert out.variance[1] == pytest.approx(0.0, abs=1e-24) and out.bias[1] == pytest.approx(0.0, abs=1e-12)
    assert out.spread == pytest.approx(((g - full) ** 2).sum(1).mean().item())
    with pytest.raises(ValueError, match="batch_sizes must lie in"):
        gradient_noise.minibatch_error(g, [13], draws=1, generator=torch.Generator())


def test_finite_population_variance_is_the_mean_over_every_batch():
    """The reference: every one of the C(7, B) batches, each once (exact expectation)."""
    g = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    full = g.mean(0)
    spread = ((g - full) ** 2).sum(1).mean().item()
    for B in (1, 2, 3, 7):
        errors = [((g[list(rows)].mean(0) - full) ** 2).sum().item() for rows in itertools.combinations(range(7), B)]
        assert gradient_noise.finite_population_variance(spread, 7, B) == pytest.approx(np.mean(errors), abs=1e-12)

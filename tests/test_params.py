import pytest
import torch
import torch.nn.functional as F

import sgdlab
from sgdlab.params import check_fits_model


def test_lerp_hits_both_ends_and_keeps_integer_buffers(digits):
    a = sgdlab.model_params(sgdlab.make_model("mlp", digits, batchnorm=True, seed=0))
    b = sgdlab.model_params(sgdlab.make_model("mlp", digits, batchnorm=True, seed=1))
    for key in a:
        assert torch.equal(sgdlab.lerp(a, b, 0.0)[key], a[key])
        if a[key].is_floating_point():
            assert torch.allclose(sgdlab.lerp(a, b, 1.0)[key], b[key])
    assert sgdlab.lerp(a, b, 0.7)["bn1.num_batches_tracked"] is a["bn1.num_batches_tracked"]


def test_distance_is_euclidean_over_floating_entries(digits):
    a = sgdlab.model_params(sgdlab.make_model("mlp", digits, seed=0))
    b = sgdlab.model_params(sgdlab.make_model("mlp", digits, seed=1))
    expected = torch.linalg.vector_norm(sgdlab.flatten(a) - sgdlab.flatten(b)).item()
    assert sgdlab.distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert sgdlab.distance(a, sgdlab.lerp(a, b, 0.25)) == pytest.approx(0.25 * expected, rel=1e-5)
    assert sgdlab.norm(a) == pytest.approx(torch.linalg.vector_norm(sgdlab.flatten(a)).item(), rel=1e-6)
    assert sgdlab.num_parameters(a) == sgdlab.flatten(a).numel() == 64 * 64 + 64 + 64 * 10 + 10


def test_full_loss_matches_a_direct_forward_pass_and_leaves_the_model_alone(digits):
    model = sgdlab.make_model("mlp", digits, batchnorm=True, seed=0)
    sgdlab.train(model, digits, lr=0.1, batch_size=100, epochs=1, progress=False, evaluate=False)
    model.train()
    before = sgdlab.clone_params(sgdlab.model_params(model))
    params = sgdlab.model_params(model)
    loss = sgdlab.full_loss(model, params, digits.x_train, digits.y_train, chunk_size=100)
    model.eval()
    with torch.no_grad():
        direct = F.cross_entropy(model(digits.x_train), digits.y_train).item()
    assert loss == pytest.approx(direct, rel=1e-5)
    sgdlab.full_loss(model, params, digits.x_train, digits.y_train, bn="batch")
    model.train()
    assert all(torch.equal(before[k], v) for k, v in sgdlab.model_params(model).items())
    assert model.training


def test_batch_statistics_mode_differs_from_running_statistics(digits):
    model = sgdlab.make_model("mlp", digits, batchnorm=True, seed=0)
    params = sgdlab.model_params(model)  # fresh running statistics: mean 0, variance 1
    eval_loss = sgdlab.full_loss(model, params, digits.x_train, digits.y_train)
    batch_loss = sgdlab.full_loss(model, params, digits.x_train, digits.y_train, bn="batch")
    assert eval_loss != pytest.approx(batch_loss, rel=1e-3)


def test_loss_and_accuracy_rejects_bad_arguments(digits):
    model = sgdlab.make_model("mlp", digits)
    params = sgdlab.model_params(model)
    with pytest.raises(ValueError, match="bn='train'"):
        sgdlab.full_loss(model, params, digits.x_train, digits.y_train, bn="train")
    with pytest.raises(ValueError, match="chunk_size must be positive, got 0"):
        sgdlab.full_loss(model, params, digits.x_train, digits.y_train, chunk_size=0)
    with pytest.raises(ValueError, match="same, non-zero number"):
        sgdlab.full_loss(model, params, digits.x_train, digits.y_train[:5])


def test_params_that_do_not_fit_are_named(digits):
    model = sgdlab.make_model("mlp", digits)
    params = sgdlab.model_params(model)
    with pytest.raises(ValueError, match="unexpected keys \\['extra'\\]"):
        check_fits_model(model, {**params, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="'fc1.weight'.*shape \\(3, 3\\)"):
        check_fits_model(model, {**params, "fc1.weight": torch.zeros(3, 3)})
    other = sgdlab.model_params(sgdlab.make_model("mlp", digits, hidden=(32,)))
    with pytest.raises(ValueError, match="fc1.weight"):
        sgdlab.distance(params, other)

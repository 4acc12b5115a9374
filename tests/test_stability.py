"""The stability recorder (sgdlab.stability): drift of activations, probe gradient and probe losses per step.

Every recorded value is checked against an independent computation from parameters saved at
every iterate: the MLP's layers written out by hand, gradients from ``torch.func.grad``, losses
from ``F.cross_entropy``. Measuring must not change training: runs with and without the
recorder end bit for bit in the same place on the CPU.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import sgdlab
from crash import CrashAt
from sgdlab.recorders import GradientCosineRecorder
from sgdlab.params import clone_params, model_params
from sgdlab.experiments.stability import Config, record_network, record_run
from sgdlab.stability import (
    StabilityRecorder, StabilityResult, dead_unit_fraction, drift_fall_at_drop, drift_ratio, rate_drops,
)
from sgdlab.callbacks import Callback


class KeepIterates(Callback):
    """Saves the parameters at initialisation and after every step."""

    def on_train_begin(self, model, dataset):
        self.iterates = [clone_params(model_params(model))]

    def on_step(self, step):
        self.iterates.append(clone_params(step.params_after))


def relative_change(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def mlp_by_hand(params, x):
    """fc1 and out outputs of the MLP flatten-fc1-ReLU-out, in float64, without the module."""
    p = {k: v.double() for k, v in params.items()}
    hidden = x.reshape(len(x), -1).double() @ p["fc1.weight"].T + p["fc1.bias"]
    return {"fc1": hidden, "out": torch.relu(hidden) @ p["out.weight"].T + p["out.bias"]}


def test_drift_equals_a_direct_computation_at_saved_iterates(digits):
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(12,))
    recorder, keep = StabilityRecorder(probe=40), KeepIterates()
    sgdlab.train(model, digits, lr=0.2, batch_size=50, steps=9, callbacks=[recorder, keep], progress=False, evaluate=False)
    x, y = digits.x_train[:40], digits.y_train[:40]
    outputs = [mlp_by_hand(p, x) for p in keep.iterates]
    losses = [F.cross_entropy(o["out"], y, reduction="none") for o in outputs]
    template = copy.deepcopy(model).double()
    gradients = [torch.cat([g.reshape(-1) for g in torch.func.grad(
        lambda q: F.cross_entropy(functional_call(template, q, (x.double(),)), y))(
        {k: v.double() for k, v in p.items()}).values()]) for p in keep.iterates]
    result = recorder.result
    assert result.steps.tolist() == list(range(9)) and result.layers == ["fc1", "out"]
    for name in ("fc1", "out"):
        expected = [relative_change(b[name], a[name]) for a, b in zip(outputs, outputs[1:])]
        assert np.allclose(result.activation_drift[name], expected, rtol=1e-4, atol=0), name
    assert np.allclose(result.loss_change, [float((b - a).abs().mean()) for a, b in zip(losses, losses[1:])], rtol=1e-4, atol=1e-7)
    assert np.allclose(result.probe_loss, [float(l.mean()) for l in losses[1:]], rtol=1e-5)
    assert np.allclose(result.gradient_drift, [relative_change(b, a) for a, b in zip(gradients, gradients[1:])], rtol=1e-4)
    assert np.all(result.activation_drift["fc1"] > 0)


def test_gradient_cosine_is_that_of_the_gradient_cosine_recorder(digits):
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(8,))
    recorder, cosine = StabilityRecorder(probe=30), GradientCosineRecorder()
    sgdlab.train(model, digits, lr=0.1, batch_size=64, steps=6, callbacks=[recorder, cosine], progress=False, evaluate=False)
    assert np.isnan(recorder.result.gradient_cosine[0])
    assert np.array_equal(recorder.result.gradient_cosine[1:], cosine.cosines)


class KeepGradientNorms(Callback):
    """The norm of every step's mini-batch gradient, from the parameters' .grad after the update."""

    def on_train_begin(self, model, dataset):
        self.norms = []

    def on_step(self, step):
        self.norms.append(float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in step.model.parameters()))))


def test_gradient_norm_is_that_of_the_mini_batch_gradient(digits):
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(8,))
    recorder, keep = StabilityRecorder(probe=30), KeepGradientNorms()
    sgdlab.train(model, digits, lr=0.3, batch_size=64, steps=7, callbacks=[recorder, keep], progress=False, evaluate=False)
    assert np.allclose(recorder.result.gradient_norm, keep.norms, rtol=1e-12)
    assert (recorder.result.gradient_norm > 0).all()


def test_batch_statistics_remove_the_running_statistics_floor_of_the_drift(digits):
    """At a rate of 1e-9 the weights hardly move, but BatchNorm's running statistics still do:
    evaluated with them ("eval") the drift keeps a floor; with the probe's own statistics
    ("batch") it is as small as the weights' change."""
    def drift(bn):
        recorder = StabilityRecorder(probe=50, bn=bn)
        model = sgdlab.make_model("cnn", digits, seed=0, channels=(4, 6), batchnorm=True)
        sgdlab.train(model, digits, lr=1e-9, batch_size=100, steps=6, callbacks=[recorder], progress=False, evaluate=False)
        return recorder.result.mean_activation_drift()

    eval_floor, batch = drift("eval"), drift("batch")
    assert (eval_floor > 1e-3).all()
    assert (batch < 1e-5).all()


def test_dead_units_are_those_a_direct_computation_finds(digits):
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(12,))
    with torch.no_grad():
        model.fc1.bias[[2, 7]] = -1e3  # planted: these two units are 0 on every input
    x = digits.x_train[:300]
    hidden = x.reshape(len(x), -1) @ model.fc1.weight.T + model.fc1.bias
    expected = float((hidden <= 0).all(dim=0).double().mean())
    assert dead_unit_fraction(model, x, chunk_size=64) == {"relu1": pytest.approx(expected)}
    assert expected >= 2 / 12
    cnn = sgdlab.make_model("cnn", digits, seed=0, channels=(4, 6))
    fractions = dead_unit_fraction(cnn, x)
    assert set(fractions) == {"relu1", "relu2"} and all(0 <= v <= 1 for v in fractions.values())
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        dead_unit_fraction(model, x, chunk_size=0)


@pytest.mark.parametrize("bn", ["eval", "batch"])
def test_the_probe_does_not_change_training(digits, bn):
    def run(callbacks):
        model = sgdlab.make_model("cnn", digits, seed=0, channels=(4, 6), batchnorm=True)  # BatchNorm: eval mode matters
        history = sgdlab.train(model, digits, lr=0.1, batch_size=100, steps=12, momentum=0.9, callbacks=callbacks,
                               progress=False, evaluate=False)
        return model_params(model), history

    plain, plain_history = run([])
    recorder = StabilityRecorder(probe=64, bn=bn)
    watched, watched_history = run([recorder])
    assert plain.keys() == watched.keys()
    assert all(torch.equal(plain[k], watched[k]) for k in plain)  # parameters and BatchNorm statistics, bit for bit
    assert plain_history.step_loss == watched_history.step_loss
    assert recorder.result.layers == ["conv1", "bn1", "conv2", "bn2", "out"]


def test_named_layers_are_recorded_and_others_are_not(digits):
    recorder = StabilityRecorder(probe=20, layers=["relu1"])
    sgdlab.train(sgdlab.make_model("mlp", digits, seed=0, hidden=(8,)), digits, lr=0.1, batch_size=100, steps=3,
                 callbacks=[recorder], progress=False, evaluate=False)
    assert recorder.result.layers == ["relu1"] and len(recorder.result.activation_drift["relu1"]) == 3


def test_a_resumed_run_records_what_an_uninterrupted_one_does(digits, tmp_path):
    def run(crash_at=None, checkpoint=None):
        recorder = StabilityRecorder(probe=30)
        model = sgdlab.make_model("mlp", digits, seed=0, hidden=(6,))
        sgdlab.train(model, digits, lr=0.1, batch_size=300, epochs=3, callbacks=[recorder, CrashAt(crash_at)],
                     checkpoint=checkpoint, progress=False, evaluate=False)
        return recorder.result

    uninterrupted = run()
    with pytest.raises(KeyboardInterrupt):
        run(crash_at=7, checkpoint=tmp_path / "run.pt")  # 5 steps per epoch: dies in the second epoch
    resumed = run(checkpoint=tmp_path / "run.pt")
    assert resumed.steps.tolist() == uninterrupted.steps.tolist() == list(range(15))
    for name in ("lr", "epoch", "gradient_drift", "loss_change", "probe_loss", "gradient_norm", "gradient_cosine"):
        assert np.array_equal(getattr(resumed, name), getattr(uninterrupted, name), equal_nan=True), name
    for name in uninterrupted.layers:
        assert np.array_equal(resumed.activation_drift[name], uninterrupted.activation_drift[name])


def test_result_survives_save_and_load(digits, tmp_path):
    recorder = StabilityRecorder(probe=20)
    sgdlab.train(sgdlab.make_model("mlp", digits, seed=0, hidden=(5,)), digits, lr=0.1, batch_size=100, epochs=1,
                 callbacks=[recorder], progress=False, evaluate=False)
    recorder.result.save(tmp_path / "stability.npz")
    loaded = StabilityResult.load(tmp_path / "stability.npz")
    assert loaded.layers == recorder.result.layers
    assert np.array_equal(loaded.epoch, np.arange(1, 15) / 14)
    assert np.array_equal(loaded.activation_drift["out"], recorder.result.activation_drift["out"])
    assert np.array_equal(loaded.gradient_cosine, recorder.result.gradient_cosine, equal_nan=True)


def test_rate_drops_are_the_step_schedule_milestones(digits):
    history = sgdlab.train(sgdlab.make_model("mlp", digits, seed=0, hidden=(5,)), digits, lr=0.1, batch_size=100, epochs=4,
                           schedule={"name": "step", "milestones": [1, 3], "gamma": 0.25}, progress=False, evaluate=False)
    assert rate_drops(history.step_lr).tolist() == [14, 42]  # 14 steps per epoch
    assert rate_drops(history.step_lr, factor=5).tolist() == []
    assert rate_drops([0.1] * 5).tolist() == []


def test_drift_ratio_compares_the_windows_around_the_step():
    values = np.array([4.0, 2.0, 6.0, 1.0, 1.0, 2.0])
    assert drift_ratio(values, 3, 3) == pytest.approx(4.0 / (4.0 / 3))
    assert drift_ratio(values, 2, 2) == pytest.approx(3.0 / 3.5)
    assert drift_ratio([np.nan, 3.0, 1.0, 1.0], 2, 2) == pytest.approx(3.0)


@pytest.mark.parametrize("arguments, message", [
    (dict(probe=0), "probe must be a positive int"),
    (dict(probe=2.5), "probe must be a positive int"),
    (dict(x=torch.zeros(3, 1, 8, 8)), "give both x and y"),
    (dict(x=torch.zeros(3, 1, 8, 8), y=torch.zeros(2, dtype=torch.long)), "same, non-zero number"),
    (dict(layers="fc1"), "layers must be a non-empty list"),
    (dict(layers=[]), "layers must be a non-empty list"),
    (dict(bn="train"), "bn='train' is not known; choose one of: eval, batch"),
])
def test_bad_recorder_arguments_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        StabilityRecorder(**arguments)


def test_bad_layers_and_oversized_probes_are_refused_when_training_starts(digits):
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(5,))
    with pytest.raises(ValueError, match=r"layers \['conv1'\] are not modules of the model"):
        sgdlab.train(model, digits, lr=0.1, batch_size=100, steps=1, callbacks=[StabilityRecorder(10, layers=["conv1"])], progress=False)
    with pytest.raises(ValueError, match="probe=5000 exceeds the 1347 training examples"):
        sgdlab.train(model, digits, lr=0.1, batch_size=100, steps=1, callbacks=[StabilityRecorder(5000)], progress=False)
    with pytest.raises(ValueError, match="nothing recorded yet"):
        StabilityRecorder().result


@pytest.mark.parametrize("call, message", [
    (lambda: rate_drops([0.1, 0.01], factor=1.0), "factor must be a number above 1"),
    (lambda: rate_drops([[0.1, 0.01]]), "one rate per update"),
    (lambda: drift_ratio(np.ones(10), 5, 0), "window must be a positive int"),
    (lambda: drift_ratio(np.ones(10), 2, 3), "at=2 must be an int step with 3 steps"),
    (lambda: drift_ratio(np.ones(10), 8, 3), "at=8 must be an int step"),
])
def test_bad_drop_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_gpu_preset_network_resnet18_with_batchnorm_records_every_layer_through_a_step_decay():
    """The gpu preset's stability network (ResNet-18, CIFAR-shaped input) runs on the CPU here, on random data."""
    preset = sgdlab.get_preset("gpu")
    g = torch.Generator().manual_seed(0)
    data = sgdlab.Dataset("cifar10-shaped", torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g),
                          torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g), 10)
    model = sgdlab.make_model(preset.stability.cnn_arch, data, seed=0)
    recorder = StabilityRecorder(4)
    history = sgdlab.train(model, data, lr=preset.stability.cnn_lr, batch_size=4, epochs=2, progress=False,
                           schedule={"name": "step", "milestones": [1], "gamma": 0.1}, callbacks=[recorder])
    result = recorder.result
    assert len(result.steps) == history.steps == 8 and not history.diverged
    assert list(rate_drops(history.step_lr)) == [4]
    drift = result.mean_activation_drift()
    assert drift.shape == (8,) and np.isfinite(drift).all() and (drift > 0).all()
    assert len(result.layers) >= 20   # every convolution, norm and the classifier of the residual network


def test_drift_fall_at_drop_is_the_drift_ratio_at_the_first_drop_with_a_full_window():
    values = np.array([8.0, 8.0, 6.0, 2.0, 1.0, 1.0, 3.0])
    lr = np.array([1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01])  # drops at steps 3 and 6
    assert drift_fall_at_drop(values, lr, 2) == pytest.approx(((8 + 6) / 2) / ((2 + 1) / 2))  # by hand
    assert drift_fall_at_drop(values, lr, 3) == drift_ratio(values, 3, 3)
    assert drift_fall_at_drop(values, lr, 4) is None       # no full window after the drop
    assert drift_fall_at_drop(values, np.ones(7), 1) is None  # no drop at all


def test_record_network_is_record_run_with_the_chapters_settings(digits):
    config = Config(epochs=1, batch_size=200, probe=50, mlp_lr=0.2)
    history, result = record_network(config, "MLP", digits, config.schedule("step", decay_epoch=1), seed=2)
    by_hand_history, by_hand = record_run("mlp", digits, lr=0.2, schedule={"name": "step", "milestones": [1], "gamma": 0.1},
                                          epochs=1, batch_size=200, probe=50, bn="batch", seed=2)
    assert history.train_loss == by_hand_history.train_loss
    np.testing.assert_array_equal(result.mean_activation_drift(), by_hand.mean_activation_drift())
    with pytest.raises(ValueError, match="net='RNN' is not allowed"):
        record_network(config, "RNN", digits, "constant")

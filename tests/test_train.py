import math

import pytest
import torch

import sgdlab
from crash import CrashAt
from sgdlab.callbacks import Callback, StopTraining


def quick_train(data, **overrides):
    options = dict(lr=0.1, batch_size=100, epochs=2, progress=False)
    options.update(overrides)
    model = sgdlab.make_model("mlp", data, seed=options.pop("model_seed", 0))
    return model, sgdlab.train(model, data, **options)


def test_same_seed_gives_bit_identical_parameters(digits):
    model_a, history_a = quick_train(digits, seed=3)
    model_b, history_b = quick_train(digits, seed=3)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert history_a.step_loss == history_b.step_loss


def test_different_seeds_change_the_run(digits):
    model_a, _ = quick_train(digits, seed=0)
    model_b, _ = quick_train(digits, seed=1)
    assert not torch.equal(model_a.out.weight, model_b.out.weight)
    model_c, _ = quick_train(digits, seed=0, model_seed=1)
    assert not torch.equal(model_a.out.weight, model_c.out.weight)


def test_mlp_on_digits_reaches_90_percent_test_accuracy_in_20_epochs(digits):
    _, history = quick_train(digits, epochs=20)
    assert history.test_accuracy[-1] >= 0.90
    assert history.epoch == [float(e) for e in range(1, 21)]
    assert history.steps == 20 * math.ceil(1347 / 100)


def test_huge_learning_rate_is_reported_as_divergence(digits):
    with pytest.warns(RuntimeWarning, match="lr=10000"):
        _, history = quick_train(digits, lr=1e4, epochs=5)
    assert history.diverged and history.diverged_at < 10
    assert "lr=10000" in history.stopped_because
    assert all(math.isfinite(v) for v in history.step_loss + history.train_loss)
    assert len(history.step_loss) == history.diverged_at


def test_full_batch_gradient_descent_takes_one_step_per_epoch(digits):
    _, history = quick_train(digits, batch_size="full", epochs=3)
    assert history.steps_per_epoch == 1 and history.steps == 3
    assert history.config["batch_size"] == digits.n_train


def test_steps_may_end_mid_epoch_and_are_evaluated_there(digits):
    _, history = quick_train(digits, epochs=None, steps=20)
    assert history.steps == 20
    assert history.epoch == [1.0, 20 / 14]


def test_step_schedule_drops_the_rate_at_its_milestones(digits):
    _, history = quick_train(digits, epochs=4, schedule={"name": "step", "milestones": [2], "gamma": 0.5})
    per_epoch = history.steps_per_epoch
    assert history.step_lr[2 * per_epoch - 1] == pytest.approx(0.1)
    assert history.step_lr[2 * per_epoch] == pytest.approx(0.05)


def test_cosine_and_warmup_schedules_have_their_shapes(digits):
    _, cosine = quick_train(digits, epochs=4, schedule="cosine")
    assert cosine.step_lr[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(cosine.step_lr, cosine.step_lr[1:]))
    assert cosine.step_lr[-1] < 0.002
    _, warm = quick_train(digits, epochs=4, schedule={"name": "warmup-cosine", "warmup": 1})
    peak = max(range(warm.steps), key=warm.step_lr.__getitem__)
    assert peak == warm.steps_per_epoch
    assert warm.step_lr[0] < 0.1 * warm.step_lr[peak]
    assert warm.step_lr[-1] < 0.01


def test_every_optimizer_trains(digits):
    for optimizer, lr, momentum in (("sgd", 0.1, 0.9), ("adam", 1e-3, 0.0), ("adamw", 1e-3, 0.0), ("rmsprop", 1e-3, 0.0)):
        _, history = quick_train(digits, optimizer=optimizer, lr=lr, momentum=momentum, epochs=3)
        assert history.train_loss[-1] < history.train_loss[0], optimizer


class Recorder(Callback):
    wants_params_before = True

    def __init__(self, stop_after=None):
        self.stop_after, self.moves, self.epochs, self.ended = stop_after, [], [], None

    def on_step(self, step):
        self.moves.append(sgdlab.distance(step.params_before, step.params_after))
        grad_norm = sum(float((g ** 2).sum()) for g in step.grads.values()) ** 0.5
        assert self.moves[-1] == pytest.approx(step.lr * grad_norm, rel=1e-4)  # plain SGD: |dw| = lr |g|
        if self.stop_after is not None and step.index + 1 == self.stop_after:
            raise StopTraining("enough")

    def on_epoch_end(self, epoch, history):
        self.epochs.append(epoch)

    def on_train_end(self, history):
        self.ended = history


def test_callbacks_see_parameters_before_and_after_each_step(digits):
    recorder = Recorder()
    _, history = quick_train(digits, callbacks=[recorder])
    assert len(recorder.moves) == history.steps and recorder.epochs == [0, 1]
    assert recorder.ended is history


def test_a_callback_can_stop_training(digits):
    recorder = Recorder(stop_after=5)
    _, history = quick_train(digits, callbacks=[recorder])
    assert history.steps == 5 and history.stopped_because == "enough"
    assert not history.diverged and history.epoch == [5 / 14]


def test_history_round_trips_through_json(digits, tmp_path):
    _, history = quick_train(digits)
    history.save(tmp_path / "history.json")
    assert sgdlab.History.load(tmp_path / "history.json") == history


@pytest.mark.parametrize("overrides, message", [
    (dict(lr=0.0), "lr must be a positive finite number, got lr=0.0"),
    (dict(lr=-1), "lr=-1"),
    (dict(lr=float("nan")), "lr=nan"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(batch_size=5000), "batch_size must be an int in 1..1347.*batch_size=5000"),
    (dict(batch_size="half"), "batch_size='half'"),
    (dict(epochs=None), "exactly one of epochs and steps, got epochs=None, steps=None"),
    (dict(epochs=2, steps=10), "epochs=2, steps=10"),
    (dict(epochs=-1), "epochs=-1"),
    (dict(optimizer="lbfgs"), "optimizer 'lbfgs' is not known; choose one of: sgd, adam, adamw, rmsprop"),
    (dict(optimizer="adam", momentum=0.9), "momentum=0.9 applies to optimizer 'sgd' or 'rmsprop'"),
    (dict(schedule="exponential"), "schedule 'exponential' is not known; choose one of: constant, step, cosine, warmup-cosine, cyclic"),
    (dict(schedule={"name": "cyclic", "low": 1.5}), "schedule 'cyclic': low must be a number in \\(0, 1\\).*low=1.5"),
    (dict(schedule={"name": "cyclic", "half_period": 0}), "schedule 'cyclic': half_period must be a positive number of epochs.*half_period=0"),
    (dict(schedule={"name": "cyclic", "period": 2}), "does not take \\['period'\\]; it takes: \\['half_period', 'low'\\]"),
    (dict(schedule={"name": "cosine", "gamma": 0.1}), "does not take \\['gamma'\\]"),
    (dict(diverge_factor=0.5), "diverge_factor=0.5"),
])
def test_bad_arguments_name_the_parameter_and_value(digits, overrides, message):
    with pytest.raises(ValueError, match=message):
        quick_train(digits, **overrides)


def test_a_model_built_for_another_dataset_is_refused(digits):
    mnist1d = sgdlab.load_dataset("mnist1d", device="cpu")
    with pytest.raises(ValueError, match="does not fit dataset 'mnist1d'.*\\(1, 40\\)"):
        sgdlab.train(sgdlab.make_model("mlp", digits), mnist1d, lr=0.1, batch_size=100, epochs=1)
    with pytest.raises(ValueError, match="dataset 'spirals' has 3 classes"):
        spirals = sgdlab.load_dataset("spirals", device="cpu")
        sgdlab.train(sgdlab.make_model("mlp", "moons"), spirals, lr=0.1, batch_size=100, epochs=1)


def test_dataset_must_come_from_load_dataset(digits):
    with pytest.raises(ValueError, match="dataset must be an sgdlab Dataset"):
        sgdlab.train(sgdlab.make_model("mlp", digits), "digits", lr=0.1, batch_size=100, epochs=1)


def test_a_run_resumed_from_its_checkpoint_ends_as_an_uninterrupted_one(digits, tmp_path):
    options = dict(lr=0.1, batch_size=100, epochs=4, momentum=0.9, schedule="cosine", seed=5, progress=False)
    model = sgdlab.make_model("mlp", digits, seed=1)
    history = sgdlab.train(model, digits, callbacks=[CrashAt()], **options)

    checkpoint = tmp_path / "run" / "checkpoint.pt"
    crashed = sgdlab.make_model("mlp", digits, seed=1)
    with pytest.raises(KeyboardInterrupt):
        sgdlab.train(crashed, digits, callbacks=[CrashAt(2 * 14 + 3)], checkpoint=checkpoint, **options)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["step_index"] == 2 * 14  # the last completed epoch, not the step it died in

    resumed = sgdlab.make_model("mlp", digits, seed=1)
    resumed_history = sgdlab.train(resumed, digits, callbacks=[CrashAt()], checkpoint=checkpoint, **options)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed_history.step_loss == history.step_loss
    assert resumed_history.step_lr == history.step_lr
    assert resumed_history.test_accuracy == history.test_accuracy


def test_cyclic_schedule_is_the_triangle_written_out_by_hand(digits):
    # 14 steps an epoch; half_period 1.5 epochs = 21 steps from the lowest rate to the peak
    _, history = quick_train(digits, lr=0.4, epochs=6, schedule={"name": "cyclic", "low": 0.25, "half_period": 1.5})
    half, low, peak = 21, 0.25 * 0.4, 0.4
    expected = [low + (peak - low) * (1 - abs((t % (2 * half)) / half - 1)) for t in range(history.steps)]
    assert history.steps == 84 and history.step_lr == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert history.step_lr[0] == pytest.approx(low) and history.step_lr[half] == pytest.approx(peak)
    _, default = quick_train(digits, lr=0.4, epochs=4, schedule="cyclic")  # two whole cycles, from and back to 0.1 * lr
    assert max(default.step_lr) == pytest.approx(0.4) and default.step_lr.index(max(default.step_lr)) == 14
    assert default.step_lr[0] == pytest.approx(0.04) and default.step_lr[28] == pytest.approx(0.04)


def test_a_cyclic_run_resumed_from_its_checkpoint_ends_as_an_uninterrupted_one(digits, tmp_path):
    options = dict(lr=0.3, batch_size=100, epochs=3, schedule="cyclic", seed=2, progress=False)
    model = sgdlab.make_model("mlp", digits, seed=1)
    history = sgdlab.train(model, digits, callbacks=[CrashAt()], **options)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        sgdlab.train(sgdlab.make_model("mlp", digits, seed=1), digits, callbacks=[CrashAt(14 + 5)],
                     checkpoint=checkpoint, **options)
    resumed = sgdlab.make_model("mlp", digits, seed=1)
    resumed_history = sgdlab.train(resumed, digits, callbacks=[CrashAt()], checkpoint=checkpoint, **options)
    assert resumed_history.step_lr == history.step_lr and resumed_history.step_loss == history.step_loss
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_another_run_is_refused(digits, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    quick_train(digits, epochs=1, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="another run .*lr"):
        quick_train(digits, epochs=1, lr=0.2, checkpoint=checkpoint)


def test_an_expected_divergence_stops_quietly_and_the_history_still_says_why(digits):
    import warnings

    model = sgdlab.make_model("mlp", digits, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        history = sgdlab.train(model, digits, lr=1e4, batch_size=100, epochs=5, progress=False,
                               on_divergence="stop")
    assert history.diverged and "lr=10000" in history.stopped_because
    with pytest.raises(ValueError, match=r"on_divergence must be one of 'warn', 'stop', got on_divergence='ignore'"):
        sgdlab.train(model, digits, lr=0.1, batch_size=100, epochs=1, on_divergence="ignore")


def test_sgdlab_progress_0_turns_the_default_progress_bar_off(digits, monkeypatch, capsys):
    def run(**options):
        sgdlab.train(sgdlab.make_model("mlp", digits, seed=0), digits, lr=0.1, batch_size=10, steps=250,
                     evaluate=False, **options)
        return capsys.readouterr().err

    monkeypatch.setenv("SGDLAB_PROGRESS", "0")
    assert run() == ""                      # the book's build: no frozen bar in a page
    assert "/250 [" in run(progress=True)   # asked for explicitly, it shows
    monkeypatch.delenv("SGDLAB_PROGRESS")
    assert "/250 [" in run()                # the default elsewhere

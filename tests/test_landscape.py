import numpy as np
import pytest
import torch

import sgdlab
from crash import CrashAt
from sgdlab.landscape import DEFAULT_ALPHAS, barrier_height, crosses_barrier, has_interior_minimum, interpolate, lmc_barrier
from sgdlab.step_quadratic import StepQuadratic, gd_and_sgd_walks, valley_prediction, walk_with_quadratic
from sgdlab.landscape import valley_inside
from sgdlab.walk import WalkRecorder, WalkResult


def naive_curve(model, a, b, x, y, alphas=DEFAULT_ALPHAS, bn="eval", chunk_size=500):
    return torch.tensor([sgdlab.full_loss(model, sgdlab.lerp(a, b, alpha), x, y, bn=bn, chunk_size=chunk_size) for alpha in alphas], dtype=torch.float64)


def two_iterates(data, arch="mlp", epochs=1, **options):
    model = sgdlab.make_model(arch, data, seed=0, **options)
    start = sgdlab.clone_params(sgdlab.model_params(model))
    sgdlab.train(model, data, lr=0.1, batch_size=100, epochs=epochs, progress=False, evaluate=False)
    return model, start, sgdlab.clone_params(sgdlab.model_params(model))


@pytest.mark.parametrize("arch, options", [
    ("mlp", {}), ("mlp", {"batchnorm": True}), ("cnn", {}), ("cnn", {"batchnorm": True}),
])
def test_interpolation_matches_evaluating_each_point(digits, arch, options):
    model, a, b = two_iterates(digits, arch, **options)
    for bn in ("eval", "batch"):
        ours = interpolate(model, a, b, digits.x_train, digits.y_train, bn=bn, chunk_size=500)
        assert torch.allclose(ours, naive_curve(model, a, b, digits.x_train, digits.y_train, bn=bn), rtol=1e-5), bn


def test_interpolation_works_for_models_that_are_not_sequential(digits):
    cifar_like = sgdlab.data.Dataset("cifar10", torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,)),
                                     torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)), 10)
    model = sgdlab.make_model("resnet20", cifar_like)
    a = sgdlab.clone_params(sgdlab.model_params(model))
    b = sgdlab.model_params(sgdlab.make_model("resnet20", cifar_like, seed=1))
    ours = interpolate(model, a, b, cifar_like.x_train, cifar_like.y_train, alphas=[0.0, 0.5, 1.0])
    assert torch.allclose(ours, naive_curve(model, a, b, cifar_like.x_train, cifar_like.y_train, [0.0, 0.5, 1.0]), rtol=1e-5)


def test_interpolation_leaves_the_model_untouched(digits):
    model, a, b = two_iterates(digits, "mlp", batchnorm=True)
    before = sgdlab.clone_params(sgdlab.model_params(model))
    interpolate(model, a, b, digits.x_train, digits.y_train, bn="batch")
    assert all(torch.equal(before[k], v) for k, v in sgdlab.model_params(model).items())


def test_barrier_definitions_on_hand_made_curves():
    valley = [1.0, 0.8, 0.7, 0.9]
    bump = [1.0, 1.3, 1.1, 0.9]
    assert not crosses_barrier(valley) and barrier_height(valley) == 0.0 and has_interior_minimum(valley)
    assert crosses_barrier(bump) and barrier_height(bump) == pytest.approx(0.3)
    assert not crosses_barrier(bump, tol=0.5)
    assert not crosses_barrier([1.0, 1.0, 1.0]) and not has_interior_minimum([1.0, 0.9, 0.8])


@pytest.mark.parametrize("curve", [[1.0, 2.0], [], 3.0])
def test_curves_shorter_than_three_points_are_refused(curve):
    with pytest.raises(ValueError, match="at least 3 points"):
        barrier_height(curve)


@pytest.mark.parametrize("alphas, message", [
    ([0.0, 0.5, 1.5], "must lie in \\[0, 1\\]"), ([-0.1, 0.5], "must lie in"), ([0.0, 0.6, 0.4, 1.0], "strictly increasing"),
])
def test_bad_alphas_are_refused(digits, alphas, message):
    model, a, b = two_iterates(digits)
    with pytest.raises(ValueError, match=message):
        interpolate(model, a, b, digits.x_train, digits.y_train, alphas)


def test_parameters_that_do_not_fit_the_model_are_named(digits):
    model, a, b = two_iterates(digits)
    with pytest.raises(ValueError, match="params_b does not fit the model: missing keys \\['out.bias'\\]"):
        interpolate(model, a, {k: v for k, v in b.items() if k != "out.bias"}, digits.x_train, digits.y_train)
    wide = sgdlab.model_params(sgdlab.make_model("mlp", digits, hidden=(32,)))
    with pytest.raises(ValueError, match="params_a\\['fc1.weight'\\] has shape \\(32, 64\\)"):
        interpolate(model, wide, b, digits.x_train, digits.y_train)


def test_lmc_barrier_offers_both_definitions(digits):
    model, a, b = two_iterates(digits)
    other = sgdlab.model_params(sgdlab.make_model("mlp", digits, seed=5))
    barrier = lmc_barrier(model, b, other, digits.x_train, digits.y_train)
    curve, alphas = barrier.curve, barrier.alphas
    assert barrier.above_line == pytest.approx(np.max(curve - ((1 - alphas) * curve[0] + alphas * curve[-1])))
    assert barrier.above_mean == pytest.approx(curve.max() - (curve[0] + curve[-1]) / 2)
    with pytest.raises(ValueError, match="start at 0 and end at 1"):
        lmc_barrier(model, a, b, digits.x_train, digits.y_train, alphas=[0.0, 0.5])


def recorded_walk(data, epochs=(1, 3), batch_size=50, **options):
    recorder = WalkRecorder(epochs=epochs, **options)
    snapshots = []

    class Snapshots(sgdlab.Callback):
        def on_step(self, step):
            snapshots.append((step.epoch, sgdlab.clone_params(step.params_after)))

    model = sgdlab.make_model("mlp", data, seed=0)
    start = sgdlab.clone_params(sgdlab.model_params(model))
    history = sgdlab.train(model, data, lr=0.1, batch_size=batch_size, epochs=max(epochs), callbacks=[recorder, Snapshots()], progress=False)
    return model, start, snapshots, history, recorder.result


def test_walk_recorder_curves_equal_interpolating_saved_iterates(digits):
    model, start, snapshots, history, result = recorded_walk(digits)
    assert result.epochs == [1, 3]
    per_epoch = history.steps_per_epoch
    assert list(result.steps[0]) == list(range(per_epoch))
    assert list(result.steps[1]) == list(range(2 * per_epoch, 3 * per_epoch))
    iterates = [start] + [params for _, params in snapshots]
    for epoch_index, steps in enumerate(result.steps):
        for row, t in enumerate(steps[:5]):
            expected = naive_curve(model, iterates[t], iterates[t + 1], digits.x_train, digits.y_train)
            assert np.allclose(result.curves[epoch_index][row], expected.numpy(), rtol=1e-5)
    # the end of one step is the start of the next, evaluated once
    assert np.array_equal(result.curves[0][1:, 0], result.curves[0][:-1, -1])
    assert result.batch_loss[0][0] == history.step_loss[0]


def test_walk_recorder_can_limit_steps_and_record_full_batch_descent(digits):
    _, _, _, _, result = recorded_walk(digits, epochs=(2,), steps=4)
    assert [len(c) for c in result.curves] == [4]
    gd = WalkRecorder(epochs=range(1, 6))
    sgdlab.train(sgdlab.make_model("mlp", digits, seed=0), digits, lr=0.1, batch_size="full", epochs=5,
                 callbacks=[gd], progress=False)
    assert gd.result.epochs == [1, 2, 3, 4, 5] and all(len(c) == 1 for c in gd.result.curves)


def test_census_counts_barriers_interior_minima_and_floor_moves():
    curves = np.array([
        [1.0, 0.8, 0.9],   # interior minimum 0.8
        [0.9, 0.85, 1.0],  # interior minimum 0.85: the floor rises
        [1.0, 1.2, 0.7],   # a barrier of height 0.2 above the larger end 1.0
        [0.7, 0.5, 0.6],   # interior minimum 0.5
        [0.6, 0.4, 0.5],   # interior minimum 0.4: the floor falls
    ])
    result = WalkResult(np.array([0, 0.5, 1]), [1], [np.arange(5)], [curves], [np.zeros(5)])
    row = result.census()[0]
    assert row["barriers"] == 1 and row["max_relative_height"] == pytest.approx(0.2)
    assert row["interior_minimum"] == pytest.approx(4 / 5)
    assert row["floor_rises"] == 1 and row["floor_falls"] == 1
    position, floor = result.valley_floor(1)
    assert np.allclose(floor, [0.8, 0.85, 0.7, 0.5, 0.4]) and np.allclose(position, [0.5, 1.5, 3.0, 3.5, 4.5])
    with pytest.raises(ValueError, match="epoch 7 was not recorded; recorded epochs: \\[1\\]"):
        result.valley_floor(7)


def test_walk_result_round_trips_through_npz(digits, tmp_path):
    *_, result = recorded_walk(digits, epochs=(1,), steps=3)
    result.save(tmp_path / "walk.npz")
    loaded = WalkResult.load(tmp_path / "walk.npz")
    assert loaded.epochs == result.epochs and loaded.config == result.config
    assert all(np.array_equal(a, b) for a, b in zip(loaded.curves, result.curves))
    assert loaded.census() == result.census()


@pytest.mark.parametrize("options, message", [
    (dict(epochs=[]), "epochs must be a non-empty list"), (dict(epochs=[0, 1]), "counted from 1"),
    (dict(steps=0), "steps=0"), (dict(alphas=[0.0, 1.0]), "interior point"), (dict(alphas=[0.1, 0.5, 1.0]), "include 0 and 1"),
    (dict(bn="train"), "bn='train'"),
])
def test_walk_recorder_refuses_bad_settings(digits, options, message):
    with pytest.raises(ValueError, match=message):
        recorder = WalkRecorder(**options)
        sgdlab.train(sgdlab.make_model("mlp", digits), digits, lr=0.1, batch_size=100, epochs=1, callbacks=[recorder], progress=False)


def test_a_resumed_walk_records_what_an_uninterrupted_one_does(digits, tmp_path):
    options = dict(epochs=(1, 3, 4), lr=0.1, batch_size=100, seed=2, progress=False)
    _, whole = sgdlab.record_walk(sgdlab.make_model("mlp", digits, seed=0), digits, **options)

    paths = dict(checkpoint=tmp_path / "checkpoint.pt", save_to=tmp_path / "walk.npz")
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 3, after epoch 1 was recorded
        sgdlab.record_walk(sgdlab.make_model("mlp", digits, seed=0), digits, callbacks=[CrashAt(2 * 14 + 5)], **paths, **options)
    assert sgdlab.WalkResult.load(paths["save_to"]).epochs == [1]  # what was measured survives the crash

    _, resumed = sgdlab.record_walk(sgdlab.make_model("mlp", digits, seed=0), digits, callbacks=[CrashAt()],
                                    **paths, **options)
    assert resumed.epochs == whole.epochs == [1, 3, 4]
    for a, b in zip(whole.curves, resumed.curves):
        np.testing.assert_array_equal(a, b)
    assert sgdlab.WalkResult.load(paths["save_to"]).epochs == [1, 3, 4]


def test_overall_census_sees_floor_moves_across_full_batch_epochs():
    # full-batch descent: one update per epoch, so the per-epoch census can never pair two of them
    curves = [np.array([[1.0, 0.8, 0.9]]), np.array([[0.9, 0.85, 1.0]]), np.array([[1.0, 0.7, 0.9]])]
    result = WalkResult(np.array([0, 0.5, 1]), [1, 2, 3], [np.array([0]), np.array([1]), np.array([2])], curves,
                        [np.zeros(1)] * 3)
    assert all(row["floor_rises"] == 0 and row["floor_falls"] == 0 for row in result.census())
    row = result.overall()
    assert row["epoch"] is None and row["steps"] == 3 and row["interior_minimum"] == 1.0
    assert row["floor_rises"] == 1 and row["floor_falls"] == 1
    # updates that are not consecutive (epochs 1 and 3 recorded, not 2) are never paired
    gap = WalkResult(np.array([0, 0.5, 1]), [1, 3], [np.array([0]), np.array([2])], curves[::2], [np.zeros(1)] * 2)
    assert gap.overall()["floor_falls"] == 0


@pytest.mark.parametrize("batch_size, lr", [("full", 1.0), (20, 0.3)])
def test_step_quadratic_matches_derivatives_along_the_line_by_autograd(digits, batch_size, lr):
    from sgdlab.step_quadratic import walk_with_quadratic

    pairs = []

    class Pairs(sgdlab.Callback):
        wants_params_before = True

        def on_step(self, step):
            pairs.append((step.params_before, sgdlab.clone_params(step.params_after)))

    model = sgdlab.make_model("mlp", digits, seed=0)
    epochs = range(1, 6) if batch_size == "full" else (2,)
    _, walk, quad = walk_with_quadratic(model, digits, epochs=epochs, steps=5, lr=lr, batch_size=batch_size,
                                        seed=0, progress=False, callbacks=[Pairs()])
    assert np.array_equal(quad.steps, walk.segments(None)[0]) and np.all(quad.lr == lr)
    x, y = digits.x_train, digits.y_train
    names = [n for n, _ in model.named_parameters()]
    for i, t in enumerate(quad.steps):
        a, b = pairs[t]

        def along(alpha):  # the full-set loss (no BatchNorm here) on the line through the two iterates, a function of one number
            point = {n: a[n] + alpha * (b[n] - a[n]) if n in names else a[n] for n in a}
            return torch.nn.functional.cross_entropy(torch.func.functional_call(model, point, (x,)), y)

        zero = torch.zeros(())
        slope = torch.autograd.functional.jacobian(along, zero)
        second = torch.autograd.functional.hessian(along, zero)
        assert quad.descent[i] == pytest.approx(-float(slope), rel=1e-3, abs=1e-6)
        assert quad.curvature[i] == pytest.approx(float(second), rel=1e-3, abs=1e-6)
        # the alignment g.H.g / g.g: the same one-number route, along the full gradient
        variables = {n: a[n].clone().requires_grad_() for n in names}
        loss = torch.nn.functional.cross_entropy(torch.func.functional_call(model, {**a, **variables}, (x,)), y)
        g = dict(zip(names, torch.autograd.grad(loss, list(variables.values()))))
        along_g = lambda alpha: torch.nn.functional.cross_entropy(
            torch.func.functional_call(model, {**a, **{n: a[n] + alpha * g[n] for n in names}}, (x,)), y)
        g_h_g = float(torch.autograd.functional.hessian(along_g, zero))
        g_g = sum(float((g[n] ** 2).sum()) for n in names)
        assert quad.alignment[i] == pytest.approx(g_h_g / g_g, rel=1e-3, abs=1e-6)
        if batch_size == "full":  # GD's step is -lr g: its ratio is lr times the alignment
            assert quad.ratio[i] == pytest.approx(lr * quad.alignment[i], rel=1e-3)
    # where the model puts its minimum inside the segment, the measured curve has its lowest point near it
    _, curves = walk.segments(None)
    inside = quad.predicts_valley(0.05, 0.95)
    lowest = walk.alphas[curves.argmin(axis=1)]
    assert np.all(np.abs(lowest[inside] - quad.alpha_star[inside]) <= 0.1)


def test_valley_inside_is_a_lowest_point_strictly_inside_the_segment():
    curves = np.array([[1.0, 0.5, 2.0], [1.0, 1.0, 2.0], [2.0, 1.5, 1.0]])
    naive = [min(c[1:-1]) < min(c[0], c[-1]) for c in curves]  # the definition, one segment at a time
    assert valley_inside(curves).tolist() == naive == [True, False, False]


def test_valley_prediction_scores_planted_steps_as_a_hand_count_does():
    alphas = np.array([0, 0.5, 1.0])
    # GD: three steps, valleys inside at the first two; SGD: two steps, a valley at the second
    gd_curves = np.array([[1.0, 0.5, 2.0], [1.0, 0.8, 0.9], [1.0, 0.9, 0.5]])
    sgd_curves = np.array([[1.0, 0.9, 0.5], [0.5, 0.1, 0.4]])
    walks = {kind: WalkResult(alphas, [1], [np.arange(len(c))], [c], [np.zeros(len(c))])
             for kind, c in (("GD", gd_curves), ("SGD", sgd_curves))}
    # ratio = curvature / descent: 2 (valley predicted), 0.5 (none: wrong), 0.3 (none); SGD: -1 (downward), 3
    quadratics = {"GD": StepQuadratic(np.arange(3), np.ones(3), np.ones(3), np.array([2.0, 0.5, 0.3])),
                  "SGD": StepQuadratic(np.arange(2), np.ones(2), np.ones(2), np.array([-1.0, 3.0]))}
    found = valley_prediction({(kind, 0.1): (walks[kind], quadratics[kind]) for kind in ("GD", "SGD")}, (0, 1, 10))
    assert found.steps == 5 and found.agreement == pytest.approx(4 / 5) and found.downward == 1
    assert found.per_step["GD", 0.1]["inside"].tolist() == [True, True, False]
    assert found.per_step["SGD", 0.1]["lowest"].tolist() == [1.0, 0.5]
    assert [(r["steps"], r["share"]) for r in found.by_kind["GD"]] == [(2, 0.5), (1, 1.0)]
    assert [(r["steps"], r["share"]) for r in found.pooled] == [(3, 1 / 3), (2, 1.0)]  # r = -1 falls below 1


def test_gd_and_sgd_walks_are_the_runs_walk_with_quadratic_records(digits):
    runs = gd_and_sgd_walks("mlp", digits, lrs=(0.3,), steps=2, batch_size=20, seed=1)
    assert list(runs) == [("GD", 0.3), ("SGD", 0.3)]
    for kind, batch, epochs, count in (("GD", "full", (1, 2), None), ("SGD", 20, (2,), 2)):
        _, walk, quadratic = walk_with_quadratic(sgdlab.make_model("mlp", digits, seed=1), digits, epochs=epochs,
                                                 steps=count, lr=0.3, batch_size=batch, seed=1)
        assert np.array_equal(runs[kind, 0.3][0].segments(None)[1], walk.segments(None)[1])
        assert np.array_equal(runs[kind, 0.3][1].ratio, quadratic.ratio) and len(quadratic.steps) == 2

"""One-point convexity along a path: the pull towards a target, and the points around the path."""

import numpy as np
import pytest

import sgdlab
from sgdlab import one_point
from sgdlab.recorders import IterateRecorder


@pytest.fixture(scope="module")
def run(device):
    data = sgdlab.load_dataset("moons", device=device)
    model = sgdlab.make_model("mlp", data, seed=0, hidden=(8,))
    starts = IterateRecorder(epochs=True)
    sgdlab.train(model, data, lr=0.5, batch_size=100, epochs=3, seed=0, evaluate=False,
                 callbacks=[starts])
    return model, data, starts.iterates


def test_epoch_starts_holds_one_state_per_epoch_and_the_end(run):
    model, _, points = run
    assert len(points) == 4
    assert sgdlab.distance(points[-1], sgdlab.model_params(model)) == 0.0
    assert all(sgdlab.distance(a, b) > 0 for a, b in zip(points, points[1:]))


def test_pull_is_minus_the_slope_of_the_loss_along_the_line_by_finite_differences(run):
    model, data, points = run
    x, y, start, end = data.x_train, data.y_train, points[0], points[-1]
    h = 1e-3

    def loss_at(alpha):
        return sgdlab.full_loss(model, sgdlab.lerp(start, end, alpha), x, y)

    slope = (loss_at(h) - loss_at(-h)) / (2 * h)
    assert one_point.pull_towards(model, start, end, x, y) == pytest.approx(-slope, rel=1e-2)
    assert one_point.pull_towards(model, end, end, x, y) == 0.0             # no way to go


def test_at_radius_zero_the_nearby_points_are_the_path_itself(run):
    model, data, points = run
    pull = one_point.pull_along_path(model, points, data.x_train, data.y_train,
                                     directions=2, fraction=0.0, seed=0)
    assert pull.on_path.shape == pull.nearby.shape == pull.squared.shape == (3,)
    assert np.array_equal(pull.nearby, pull.on_path)
    assert pull.squared[0] == pytest.approx(sgdlab.distance(points[0], points[-1]) ** 2, rel=1e-6)
    moved = one_point.pull_along_path(model, points, data.x_train, data.y_train,
                                      directions=2, fraction=0.2, seed=0)
    assert np.array_equal(moved.on_path, pull.on_path) and not np.array_equal(moved.nearby, pull.nearby)


def test_bad_arguments_are_refused_by_name(run):
    model, data, points = run
    with pytest.raises(ValueError, match="directions"):
        one_point.pull_along_path(model, points, data.x_train, data.y_train, directions=0, fraction=0.2, seed=0)
    with pytest.raises(ValueError, match="points"):
        one_point.pull_along_path(model, points[:1], data.x_train, data.y_train, directions=1, fraction=0.2, seed=0)

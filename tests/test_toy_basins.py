"""toy_basins: the two minima of a 2-D toy, GD's stability limit there, where runs end."""

import numpy as np
import pytest
import torch

from sgdlab import toy, toy_basins


def test_curvature_of_a_planted_quadratic_along_each_direction():
    def bowl(x):
        return 3 * x[..., 0] ** 2 + x[..., 1] ** 2                               # curvatures 6 and 2
    assert toy_basins.curvature_along(bowl, [0.3, -0.2], [1.0, 0.0]) == pytest.approx(6.0, rel=1e-6)
    assert toy_basins.curvature_along(bowl, [0.3, -0.2], [0.0, 1.0]) == pytest.approx(2.0, rel=1e-6)
    diagonal = [2 ** -0.5, 2 ** -0.5]
    assert toy_basins.curvature_along(bowl, [0.0, 0.0], diagonal) == pytest.approx(4.0, rel=1e-6)


@pytest.mark.parametrize("depth", [0.6, toy.EQUAL_DEPTH, 2.0])
def test_stability_limit_is_two_over_the_autograd_hessian_at_the_narrow_minimum(depth):
    loss = toy.narrow_and_wide_2d(depth)
    pair = torch.tensor([[-1.0, 0.0], [1.5, 0.0]], dtype=torch.float64)
    minima = toy_basins.two_minima(loss, pair)
    assert loss.gradient(minima.narrow).norm() < 1e-6 and loss.gradient(minima.wide).norm() < 1e-6
    assert minima.narrow[0] < 0 < minima.wide[0]
    hessian = torch.autograd.functional.hessian(lambda x: loss(x), minima.narrow)
    assert minima.narrow_limit == pytest.approx(2 / hessian[0, 0].item(), rel=1e-5)


def test_runs_started_in_the_minima_are_counted_there_until_the_step_is_unstable():
    loss = toy.narrow_and_wide_2d()
    pair = torch.tensor([[-1.0, 0.0], [1.5, 0.0]], dtype=torch.float64)
    minima = toy_basins.two_minima(loss, pair)
    starts = torch.stack([minima.narrow, minima.narrow, minima.wide])
    assert 0.01 < minima.narrow_limit < 0.5
    sweep, in_narrow, in_wide = toy_basins.where_runs_end(loss, starts, (0.01, 0.5), 0.0, minima, steps=1000)
    assert sweep.lrs == [0.01, 0.5]
    assert in_narrow == pytest.approx([2 / 3, 0.0])                              # above 2 / lambda GD cannot stay
    assert in_wide[0] == pytest.approx(1 / 3)

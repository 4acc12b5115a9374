"""1-D and 2-D toy losses, their smoothed versions, and GD / SGD on them, many starts at once.

A toy loss is a function of a point ``x`` of shape ``(..., dim)`` returning a tensor of
shape ``(...)``, in float64; its gradient is in closed form (checked against autograd and
finite differences in the tests). Two families:

- :class:`GaussianWells`: a wide quadratic bowl with Gaussian wells dug into it, of chosen
  places, depths and widths: several minima of different depths (:func:`wells_1d`,
  :func:`wells_2d`), or a poor narrow minimum beside a good wide one (:func:`escape_2d`).
- :class:`RippledBasin`: a wide quadratic basin with many sharp, narrow ripples on top,
  as in Kleinberg, Li and Yuan (2018), "An Alternative View: When Does SGD Escape Local
  Minima?": the ripples hold many local minima, the basin's bottom (the origin) is the global one.

The SGD of this module (:func:`run_sgd`) is the paper's model of SGD: the exact gradient
plus Gaussian noise, ``x <- x - lr * (grad f(x) + noise * z)``, ``z ~ N(0, I)``. Writing
``y = x - lr * grad f(x)``, one step of the sequence ``y`` is, on average, a step of gradient
descent on the *smoothed* loss ``g(y) = E_z f(y - lr * noise * z)``: ``f`` convolved with a
Gaussian of standard deviation ``lr * noise`` in every coordinate (Kleinberg et al.'s view,
with Gaussian noise as our choice of noise distribution). :func:`smoothed` computes ``g`` numerically on a grid; its width is
``lr * noise`` (parameter units), the same convention everywhere in the book.

Paths are tensors of shape ``(steps // every + 1, starts, dim)``: row 0 holds the starts,
and all starts (or seeds, or settings) move at once, as one batch; 200 seeds of 1,000 steps
take a fraction of a second on a CPU.

The module is long because the toy losses (each a small class with its closed-form gradient
and Laplacian), the runs on them and the measures of where runs end (time near a minimum,
rates tuned per method, minima counted on a grid) are one concept: experiments on a loss
whose answer is known, for the three chapters that use them.
"""

from __future__ import annotations

import dataclasses
import math

import torch

DTYPE = torch.float64  # toy computations are tiny; double precision keeps finite differences honest
KERNEL_WIDTHS = 6.0    # the smoothing kernel is cut at this many standard deviations


def _as_points(x, dim: int, name: str = "x") -> torch.Tensor:
    """``x`` as a float64 tensor of shape (n, dim). A 1-D ``x`` is one point of a ``dim``-D loss,
    or, for a 1-D loss, ``len(x)`` points."""
    x = torch.as_tensor(x, dtype=DTYPE)
    if x.ndim == 0 and dim == 1:
        x = x.reshape(1, 1)
    elif x.ndim == 1:
        x = x.reshape(-1, 1) if dim == 1 else x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (starts, {dim}) for a {dim}-D loss"
                         f"{' (or (starts,))' if dim == 1 else f' (or ({dim},) for one start)'}, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got {x[~torch.isfinite(x)][:3].tolist()}")
    return x


def _positive(name: str, value, *, zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (value >= 0 if zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a {'non-negative' if zero else 'positive'} finite number, got {name}={value!r}")
    return float(value)


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
    return value


class ToyLoss:
    """A loss on R^dim: ``loss(x)`` for ``x`` of shape ``(..., dim)`` gives shape ``(...)``."""

    dim: int

    def value(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=DTYPE)
        if x.shape[-1:] != (self.dim,):
            raise ValueError(f"points of a {self.dim}-D loss have a last axis of size {self.dim}, got shape {tuple(x.shape)}")
        return self.value(x)

    def gradient(self, x) -> torch.Tensor:
        """The gradient at ``x`` (shape ``(..., dim)``), by autograd; subclasses may give it in closed form."""
        x = torch.as_tensor(x, dtype=DTYPE).detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self(x).sum(), x)
        return grad

    def on_grid(self, axes) -> torch.Tensor:
        """The loss on a grid: ``axes`` is one 1-D tensor (1-D loss) or a pair of them (2-D loss,
        result indexed ``[i, j]`` = point ``(axes[0][i], axes[1][j])``)."""
        return self(_mesh(_check_axes(axes, self.dim)))


class GaussianWells(ToyLoss):
    """``f(x) = bowl/2 * |x|^2 - sum_k depth_k * exp(-|x - c_k|^2 / (2 width_k^2))``.

    ``centers`` has shape (wells, dim); ``depths`` and ``widths`` one entry per well (loss
    units; parameter units). With a shallow ``bowl`` each well holds a local minimum near
    its center; the deeper and wider wells hold the lower minima.
    """

    def __init__(self, centers, depths, widths, bowl: float = 0.05):
        self.centers = torch.as_tensor(centers, dtype=DTYPE)
        if self.centers.ndim == 1:
            self.centers = self.centers[:, None]
        k, self.dim = self.centers.shape
        self.depths = torch.as_tensor(depths, dtype=DTYPE)
        self.widths = torch.as_tensor(widths, dtype=DTYPE)
        for name, t in (("depths", self.depths), ("widths", self.widths)):
            if t.shape != (k,):
                raise ValueError(f"{name} must have one entry per well ({k}), got shape {tuple(t.shape)}")
        if not (self.widths > 0).all():
            raise ValueError(f"widths must be positive, got {self.widths.tolist()}")
        self.bowl = _positive("bowl", bowl, zero=True)

    def value(self, x):
        squared = ((x[..., None, :] - self.centers) ** 2).sum(-1)          # (..., wells)
        wells = (self.depths * torch.exp(-squared / (2 * self.widths ** 2))).sum(-1)
        return 0.5 * self.bowl * (x ** 2).sum(-1) - wells

    def gradient(self, x):
        """The gradient at ``x`` in closed form (autograd costs more than the toy itself)."""
        x = torch.as_tensor(x, dtype=DTYPE)
        diff = x[..., None, :] - self.centers                                 # (..., wells, dim)
        pull = self.depths * torch.exp(-(diff ** 2).sum(-1) / (2 * self.widths ** 2)) / self.widths ** 2
        return self.bowl * x + (pull[..., None] * diff).sum(-2)

    def laplacian(self, x):
        """The sum of the second derivatives (trace of the Hessian) at ``x``, in closed form
        (loss units per squared parameter unit); for a 1-D loss, ``f''(x)``."""
        x = torch.as_tensor(x, dtype=DTYPE)
        squared = ((x[..., None, :] - self.centers) ** 2).sum(-1)               # (..., wells)
        bump = self.depths * torch.exp(-squared / (2 * self.widths ** 2)) / self.widths ** 2
        return self.dim * self.bowl + (bump * (self.dim - squared / self.widths ** 2)).sum(-1)


class RippledBasin(ToyLoss):
    """Kleinberg, Li and Yuan's picture: a wide basin with sharp, narrow local minima on top.

    ``f(x) = basin/2 * |x|^2 + ripple * sum_j (1 - cos(2 pi x_j / wavelength))``.

    The global minimum is the origin (the basin's bottom, value 0). A ripple holds a local
    minimum wherever the basin's slope ``basin * |x_j|`` is below the ripples' largest slope
    ``2 pi ripple / wavelength``, about one every ``wavelength``; their curvature,
    ``ripple * (2 pi / wavelength)^2 + basin``, is far above the basin's. The smoothed loss is
    known in closed form (:meth:`smoothed_exact`), which the tests use to check :func:`smoothed`.
    """

    def __init__(self, dim: int = 1, basin: float = 1.0, ripple: float = 0.1, wavelength: float = 0.25):
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got dim={dim!r}")
        self.dim = dim
        self.basin = _positive("basin", basin)
        self.ripple = _positive("ripple", ripple, zero=True)
        self.wavelength = _positive("wavelength", wavelength)

    @property
    def sharp_curvature(self) -> float:
        """The curvature at the bottom of a ripple (loss units per squared parameter unit)."""
        return self.ripple * (2 * math.pi / self.wavelength) ** 2 + self.basin

    def value(self, x):
        omega = 2 * math.pi / self.wavelength
        return 0.5 * self.basin * (x ** 2).sum(-1) + self.ripple * (1 - torch.cos(omega * x)).sum(-1)

    def gradient(self, x):
        """The gradient at ``x`` in closed form."""
        x = torch.as_tensor(x, dtype=DTYPE)
        omega = 2 * math.pi / self.wavelength
        return self.basin * x + self.ripple * omega * torch.sin(omega * x)

    def ripple_factor(self, width: float) -> float:
        """How much smoothing at ``width`` (parameter units) shrinks the ripples' amplitude:
        ``exp(-(2 pi width / wavelength)^2 / 2)``, between 0 and 1."""
        return math.exp(-0.5 * (2 * math.pi * width / self.wavelength) ** 2)

    def smoothed_exact(self, x, width: float) -> torch.Tensor:
        """``E_z f(x - width * z)``, ``z ~ N(0, I)``, in closed form: the basin gains
        ``basin * dim * width^2 / 2`` and the ripples shrink by ``exp(-(2 pi width / wavelength)^2 / 2)``."""
        x = torch.as_tensor(x, dtype=DTYPE)
        omega = 2 * math.pi / self.wavelength
        damp = self.ripple_factor(width)
        return (0.5 * self.basin * ((x ** 2).sum(-1) + self.dim * width ** 2)
                + self.ripple * (1 - damp * torch.cos(omega * x)).sum(-1))


def wells_1d() -> GaussianWells:
    """A 1-D loss with four minima of different depths (the deepest at about x = 1.5)."""
    return GaussianWells(centers=[-3.0, -1.0, 1.5, 3.5], depths=[0.6, 0.9, 1.4, 0.5], widths=[0.5, 0.5, 0.6, 0.4])


def wells_2d() -> GaussianWells:
    """A 2-D loss with five wells of different depths; the shallow central well holds no minimum of its
    own (it drains into the deepest, at about (1.47, 0.98)), which leaves four minima."""
    return GaussianWells(centers=[[-2.0, -1.5], [1.5, 1.0], [-1.5, 2.0], [2.0, -2.0], [0.0, 0.0]],
                         depths=[1.0, 1.5, 0.8, 0.6, 0.5], widths=[0.7, 0.8, 0.6, 0.6, 0.5])


def escape_2d() -> GaussianWells:
    """A 2-D loss with a poor, narrow local minimum at about (-0.97, 0) and a good, wide global one at about (1.41, 0).

    The narrow well is shallow but steep-sided; the wide one is deep and gentle, so a small
    kick is enough to leave the first and not the second.
    """
    return GaussianWells(centers=[[-1.0, 0.0], [1.5, 0.0]], depths=[0.6, 1.5], widths=[0.25, 1.0], bowl=0.1)


# the narrow well's depth that makes its minimum exactly as low as the wide one's (-1.3945), found by
# bisection on the minima GD reaches (tests/test_toy.py checks the equality)
EQUAL_DEPTH = 1.37703


def narrow_and_wide_2d(narrow_depth: float = EQUAL_DEPTH) -> GaussianWells:
    """:func:`escape_2d` with the narrow well dug to ``narrow_depth``: width and depth separated.

    The narrow well (width 0.25, at about (-0.99, 0)) and the wide one (width 1.0, at about
    (1.41, 0), loss -1.3945) keep their places and widths. With the default depth both minima
    have the same loss (within 1e-4); ``narrow_depth=2.0`` makes the narrow one the deeper
    (loss about -2.017), ``0.6`` gives back :func:`escape_2d`, where it is the shallower.
    """
    return GaussianWells(centers=[[-1.0, 0.0], [1.5, 0.0]], depths=[narrow_depth, 1.5], widths=[0.25, 1.0], bowl=0.1)


def _check_axes(axes, dim: int) -> list[torch.Tensor]:
    """``axes`` (one 1-D tensor for a 1-D loss, a pair for a 2-D loss) as a list of float64 tensors."""
    if dim == 1:
        axes = [axes]
    elif not isinstance(axes, (tuple, list)):
        raise ValueError(f"axes must be a pair of 1-D tensors for a 2-D loss, got {type(axes).__name__}")
    axes = [torch.as_tensor(a, dtype=DTYPE) for a in axes]
    if len(axes) != dim or any(a.ndim != 1 or len(a) < 2 for a in axes):
        raise ValueError(f"axes must be {dim} 1-D tensor(s) of at least 2 grid points for a {dim}-D loss, "
                         f"got {len(axes)} of shapes {[tuple(a.shape) for a in axes]}")
    for a in axes:
        steps = a.diff()
        if not (steps > 0).all() or (steps - steps[0]).abs().max() > 1e-3 * steps[0]:
            raise ValueError("axes must be evenly spaced and increasing (e.g. torch.linspace)")
    return axes


def _mesh(axes: list[torch.Tensor]) -> torch.Tensor:
    """The grid's points, shape (n1, ..., dim): ``[i, j]`` is ``(axes[0][i], axes[1][j])``."""
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def grid_points(axes, dim: int = 2) -> torch.Tensor:
    """Every point of a grid as one row, float64, shape ``(n1 * n2, 2)`` (or ``(n, 1)`` for ``dim=1``).

    ``axes``: a pair of evenly spaced 1-D tensors (one tensor for ``dim=1``). Rows run in the
    order of :meth:`ToyLoss.on_grid`'s values flattened: point ``(axes[0][i], axes[1][j])`` is
    row ``i * len(axes[1]) + j``. Use it to start GD from every point of a grid at once.
    """
    return _mesh(_check_axes(axes, dim)).reshape(-1, dim)


def count_minima(values) -> int:
    """The number of strict local minima of a curve sampled on an evenly spaced grid.

    ``values``: 1-D, the curve at consecutive grid points (a tensor or array, e.g.
    :meth:`ToyLoss.on_grid` or :func:`smoothed` of a 1-D loss). A minimum is a grid point where
    the curve stops falling: the step into it is negative and the step out of it is not. The
    two end points never count (a minimum at the grid's edge is not seen); a flat bottom
    counts once, at its first point.
    """
    values = torch.as_tensor(values, dtype=DTYPE)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D (a curve on a grid), got shape {tuple(values.shape)}")
    slope = values.diff()
    return int(((slope[:-1] < 0) & (slope[1:] >= 0)).sum())


def smoothed(loss: ToyLoss, axes, lr: float, noise: float) -> torch.Tensor:
    """The loss SGD effectively descends, ``g(x) = E_z f(x - lr * noise * z)``, ``z ~ N(0, I)``, on a grid.

    ``axes``: one evenly spaced 1-D tensor for a 1-D loss, a pair for a 2-D loss (result
    indexed ``[i, j]``, as :meth:`ToyLoss.on_grid`). The convolution is numerical: ``f`` is
    evaluated on the grid extended by ``6 * lr * noise`` on every side, with the same spacing,
    and convolved, axis by axis (the Gaussian factorises), with the Gaussian density of
    standard deviation ``width = lr * noise`` sampled at the grid spacing and cut at 6
    standard deviations, its weights normalised to sum to 1. Accurate when the spacing is
    well below ``width`` and below the loss's finest feature; with ``width`` below about a
    fifth of the spacing, the weights off the centre vanish and ``g = f`` on the grid.
    """
    lr = _positive("lr", lr)
    noise = _positive("noise", noise, zero=True)
    axes = _check_axes(axes, loss.dim)
    width = lr * noise
    padded, kernels = [], []
    for a in axes:
        h = (a[1] - a[0]).item()
        m = math.ceil(KERNEL_WIDTHS * width / h)
        offsets = h * torch.arange(-m, m + 1, dtype=DTYPE)
        padded.append(torch.cat([a[0] + offsets[:m], a, a[-1] + offsets[m + 1:]]))
        weights = torch.exp(-0.5 * (offsets / width) ** 2) if width > 0 else (offsets == 0).to(DTYPE)
        kernels.append(weights / weights.sum())
    values = loss.on_grid(padded[0] if loss.dim == 1 else padded)
    for axis, kernel in enumerate(kernels):
        moved = values.movedim(axis, -1)                                     # (..., padded length)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        out = torch.nn.functional.conv1d(flat, kernel.flip(0).view(1, 1, -1))   # a true convolution, valid part
        values = out.reshape(*moved.shape[:-1], -1).movedim(-1, axis)
    return values


def run_gd(loss: ToyLoss, x0, lr, steps: int, *, every: int = 1) -> torch.Tensor:
    """Gradient descent ``x <- x - lr * grad f(x)`` from every start at once: :func:`run_sgd` without noise."""
    return run_sgd(loss, x0, lr, 0.0, steps, seed=0, every=every)


def _per_start(name: str, value, starts: int, *, zero: bool) -> torch.Tensor:
    """A number, or one number per start, as a float64 column of shape (starts, 1)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full((starts, 1), _positive(name, value, zero=zero), dtype=DTYPE)
    value = torch.as_tensor(value, dtype=DTYPE)
    if value.shape != (starts,):
        raise ValueError(f"{name} must be a number or one number per start ({starts}), got shape {tuple(value.shape)}")
    if not (torch.isfinite(value).all() and ((value >= 0) if zero else (value > 0)).all()):
        raise ValueError(f"{name} must be {'non-negative' if zero else 'positive'} and finite, got {value[:5].tolist()}...")
    return value[:, None]


def run_sgd(loss: ToyLoss, x0, lr, noise, steps: int, seed: int, *, every: int = 1) -> torch.Tensor:
    """The paper's SGD, ``x <- x - lr * (grad f(x) + noise * z)``, ``z ~ N(0, I)``, from every start at once.

    ``x0``: shape (starts, dim), or (dim,) for one start, or (starts,) for a 1-D loss. Each
    start gets its own noise, drawn from one generator seeded with ``seed``: the same
    arguments give the same path, and a batch of copies of one point gives as many
    independent runs (seeds). ``lr`` and ``noise`` are numbers, or one number per start
    (a whole grid of settings runs as one batch). ``noise`` is the standard deviation of
    the gradient noise per coordinate (gradient units); for mini-batches of ``B`` examples
    whose single-example noise has standard deviation ``s``, ``noise = s / sqrt(B)``;
    ``noise = 0`` is gradient descent.

    Returns the path, float64, shape ``(steps // every + 1, starts, dim)``: the points after
    0, every, 2 * every, ..., steps updates (``steps`` a multiple of ``every``). A point that
    leaves the finite numbers stays non-finite.
    """
    steps, every = _count("steps", steps), _count("every", every)
    if steps % every:
        raise ValueError(f"steps must be a multiple of every, got steps={steps}, every={every}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got seed={seed!r}")
    x = _as_points(x0, loss.dim, "x0")
    lr = _per_start("lr", lr, len(x), zero=False)
    noise = _per_start("noise", noise, len(x), zero=True)
    noisy = bool((noise > 0).any())
    generator = torch.Generator().manual_seed(seed)
    path = torch.empty(steps // every + 1, *x.shape, dtype=DTYPE)
    path[0] = x
    for t in range(1, steps + 1):
        step = loss.gradient(x)
        if noisy:
            step = step + noise * torch.randn(x.shape, generator=generator).to(DTYPE)  # float32 draws: 5x cheaper
        x = x - lr * step
        if t % every == 0:
            path[t // every] = x
    return path


def run_sgd_grid(loss: ToyLoss, x0, lrs, noises, seeds: int, steps: int, seed: int, *,
                 every: int = 1) -> torch.Tensor:
    """:func:`run_sgd` from one start at every pair of a grid of rates and noises, ``seeds`` runs each, as one batch.

    ``x0``: one point (a number for a 1-D loss, or shape ``(dim,)``). ``lrs`` and ``noises``:
    1-D sequences (``noise = 0`` is GD). Returns the path, shape
    ``(steps // every + 1, len(lrs) * len(noises) * seeds, dim)``, its runs ordered rate first,
    then noise, then seed: ``.reshape(len(lrs), len(noises), seeds)`` of a per-run result gives
    the grid. The noise of a run depends on its place in the batch, as in :func:`run_sgd`.
    """
    x = _as_points(x0, loss.dim, "x0")
    if len(x) != 1:
        raise ValueError(f"x0 must be one point, got {len(x)} points")
    seeds = _count("seeds", seeds)
    lrs = torch.as_tensor(lrs, dtype=DTYPE).reshape(-1)
    noises = torch.as_tensor(noises, dtype=DTYPE).reshape(-1)
    lr = lrs.repeat_interleave(len(noises) * seeds)
    noise = noises.repeat(len(lrs)).repeat_interleave(seeds)
    return run_sgd(loss, x.repeat(len(lr), 1), lr, noise, steps, seed, every=every)


def share_near(points, target, radius: float) -> float:
    """The share of ``points`` (shape (n, dim) or (n,) for 1-D) within ``radius`` of ``target``
    (Euclidean distance, parameter units); non-finite points count as not near."""
    radius = _positive("radius", radius)
    points = torch.as_tensor(points, dtype=DTYPE)
    target = torch.as_tensor(target, dtype=DTYPE)
    if points.ndim == 1:
        points = points[:, None]
    if points.ndim != 2 or target.reshape(-1).shape[0] != points.shape[1]:
        raise ValueError(f"points must have shape (n, dim) and target dim entries, got {tuple(points.shape)} and {tuple(target.shape)}")
    near = (points - target.reshape(1, -1)).norm(dim=1) < radius
    return near.double().mean().item()


def time_near(path, target, radius: float) -> torch.Tensor:
    """For each start, the share of the rows of ``path`` (shape (rows, starts, dim), as
    :func:`run_sgd` returns) within ``radius`` of ``target`` (Euclidean, parameter units):
    the share of the recorded time a run spends near it, shape (starts,). Non-finite points
    count as not near."""
    radius = _positive("radius", radius)
    path = torch.as_tensor(path, dtype=DTYPE)
    target = torch.as_tensor(target, dtype=DTYPE).reshape(-1)
    if path.ndim != 3 or path.shape[-1] != target.shape[0]:
        raise ValueError(f"path must have shape (rows, starts, dim) and target dim entries, "
                         f"got {tuple(path.shape)} and {tuple(target.shape)}")
    return ((path - target).norm(dim=-1) < radius).double().mean(0)


@dataclasses.dataclass
class RateSweep:
    """What :func:`sweep_rates` returns.

    ``paths[:, k]`` holds the runs at rate ``lrs[k]`` (shape (rows, starts, dim), every
    ``every`` steps); ``score[k]`` is their loss averaged over the recorded points of the
    run's second half and over the starts (loss units); ``best`` is the tuned rate.
    """

    lrs: list
    noise: float
    score: torch.Tensor
    best: float
    paths: torch.Tensor

    @property
    def best_paths(self) -> torch.Tensor:
        """The runs at the tuned rate, shape (rows, starts, dim)."""
        return self.paths[:, self.lrs.index(self.best)]


def sweep_rates(loss: ToyLoss, x0, lrs, noise: float, steps: int, seed: int, *, every: int = 10,
                tol: float = 1e-3) -> RateSweep:
    """Run :func:`run_sgd` (``noise = 0``: GD) from the starts ``x0`` at every rate of ``lrs``, as
    one batch, and tune the rate.

    The tuning criterion is the loss averaged over the second half of the run (the recorded
    points after ``steps / 2`` updates) and over the starts: it rewards ending low and staying
    low, and does not hinge on where one noisy iterate happens to be. Rates whose score is
    within ``tol`` (loss units) of the lowest tie; the largest of them is ``best`` (at equal
    loss, the larger step gets there in fewer steps). A run that leaves the finite numbers
    scores ``inf``.
    """
    lrs = [float(lr) for lr in lrs]
    x = _as_points(x0, loss.dim, "x0")
    starts = len(x)
    path = run_sgd(loss, x.repeat(len(lrs), 1), torch.tensor(lrs, dtype=DTYPE).repeat_interleave(starts),
                   noise, steps, seed, every=every)
    path = path.reshape(path.shape[0], len(lrs), starts, loss.dim)
    tail = path[steps // every // 2 + 1:] if steps // every >= 2 else path[-1:]
    values = loss(tail)                                                # (rows, lrs, starts)
    values = torch.where(torch.isfinite(values), values, torch.full_like(values, math.inf))
    score = values.mean(dim=(0, 2))
    finite = torch.isfinite(score)
    if not finite.any():
        raise ValueError(f"every rate of lrs={lrs} diverged")
    low = score[finite].min()
    best = max(lr for lr, s in zip(lrs, score.tolist()) if s <= low + tol)
    return RateSweep(lrs=lrs, noise=float(noise), score=score, best=best, paths=path)

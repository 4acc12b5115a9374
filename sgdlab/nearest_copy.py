"""The nearest permuted copy of a network: how far the closest copy computing the same function lies.

Every permuted copy ``apply_permutation(spec, perm, w)`` (see :mod:`sgdlab.permutation`)
computes ``w``'s function at another point of weight space. The distance
``d(w, P w)`` minimised over all non-identity permutations ``P`` sets the scale on which
a distance in weight space is "far": a random permutation moves almost every unit and
lands far away, the nearest copy may be much closer. This module finds it:

* :func:`transposition_distances` / :func:`nearest_transposition` / :func:`swap_table`:
  every swap of two units of one layer, in closed form; exact for one hidden layer.
* :func:`nearest_permuted_copy`: weight matching of a network to itself with the identity
  excluded; lets every layer move.
* :func:`firing_rates` / :func:`dead_units`: a swap of two dead units is trivial, the
  straight line to it keeps the function; :func:`swap_midpoint_losses` measures how far
  the line to any swap moves the loss (nats); :func:`nearest_swap_rises` does so for the
  nearest swaps of a :func:`swap_table`.
* :func:`distance_scale`: all of these at once, set beside the distance between two
  snapshots ``w_N``, ``w_M`` of one run and the distance to another run.

Units: every distance is Euclidean over every floating-point entry of ``params``,
BatchNorm running statistics included when the dict holds them, as
:func:`sgdlab.params.distance` counts them, so it compares directly with
``sgdlab.distance`` between two snapshots of the same dict. Permutation names, specs and
the ``perm`` convention are those of :mod:`sgdlab.permutation`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from .params import Params, check_fits_model, check_same_keys, distance, full_loss
from .permutation import (
    Permutation,
    PermutationSpec,
    activation_sites,
    unit_activations,
    MatchingProblem,
    apply_permutation,
    check_params,
    identity_permutation,
    permutation_spec,
    random_permutation,
    weight_matching,
)


@dataclasses.dataclass(frozen=True)
class Transposition:
    """Units ``i`` and ``j`` of permutation ``name`` swapped, and the distance that makes."""

    name: str
    i: int
    j: int
    distance: float


def _rows(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """``(n, rest)`` in float64 on the CPU: ``axis`` first, the other axes flattened."""
    return tensor.detach().to("cpu", torch.float64).movedim(axis, 0).reshape(tensor.shape[axis], -1)


def transposition_distances(spec: PermutationSpec, params: Params, name: str, *, to: Params | None = None) -> torch.Tensor:
    """``(n, n)`` float64: entry ``[i, j]`` is the distance from ``to`` to ``params`` with units
    ``i`` and ``j`` of permutation ``name`` swapped (the transposition ``(i j)``).

    ``to`` defaults to ``params`` itself: then the matrix is the distance from the network to
    each of its single-swap copies, symmetric with a zero diagonal. The diagonal is always
    ``d(to, params)``. Euclidean distance over every floating-point entry (parameters and, when
    ``params`` holds them, BatchNorm running statistics, as :func:`sgdlab.params.distance` counts them).

    Closed form, no copy is built: swapping units ``i`` and ``j`` changes only the rows
    (along the axis ``name`` reorders) ``i`` and ``j`` of each tensor it touches. With ``m`` the
    rows of ``to`` and ``b`` those of ``params``, the squared distance grows by
    ``||m_i - b_j||^2 + ||m_j - b_i||^2 - ||m_i - b_i||^2 - ||m_j - b_j||^2
    = 2 (C_ii + C_jj - C_ij - C_ji)`` with ``C = m b^T`` summed over the tensors; for
    ``to = params`` that is ``2 ||b_i - b_j||^2``. One matrix product per tensor.
    """
    check_params(spec, params)
    to = params if to is None else to
    check_params(spec, to, name="to")
    check_same_keys(params, to)
    axes = spec.axes_permuted_by(name)  # raises on a name the spec lacks
    cross = torch.zeros(spec.sizes[name], spec.sizes[name], dtype=torch.float64, device="cpu")
    for key, axis in axes:
        if not params[key].is_floating_point():
            continue
        if spec.axes[key].count(name) > 1:
            raise ValueError(f"permutation {name!r} reorders two axes of {key!r}; transposition_distances "
                             "supports one axis per tensor")
        cross += _rows(to[key], axis) @ _rows(params[key], axis).T
    base = distance(to, params) ** 2
    diagonal = cross.diagonal()
    growth = 2 * (diagonal[:, None] + diagonal[None, :] - cross - cross.T)
    return (base + growth).clamp_min(0).sqrt()


def _pairs_among(size: int, among: torch.Tensor | None) -> torch.Tensor:
    """``(n, n)`` bool: the pairs ``i < j`` with both units in ``among`` (all units when ``None``)."""
    allowed = torch.ones(size, dtype=torch.bool, device="cpu") if among is None else torch.as_tensor(among).cpu().bool()
    if allowed.shape != (size,):
        raise ValueError(f"among must hold one bool per unit ({size}), got shape {tuple(allowed.shape)}")
    return torch.triu(allowed[:, None] & allowed[None, :], diagonal=1)


def nearest_transposition(spec: PermutationSpec, params: Params, *, to: Params | None = None,
                          among: dict[str, torch.Tensor] | None = None) -> Transposition | None:
    """The single swap of two units of one layer that brings ``params`` closest to ``to``
    (default ``params`` itself), found exhaustively over every pair of every permutation.

    ``among``: permutation name -> bool per unit; only pairs of two allowed units count (a
    permutation not named is left out). ``None`` when no pair is allowed. Distances as in
    :func:`transposition_distances`.

    For a network with one hidden layer and ``to = params``, the nearest transposition is the
    nearest of *all* non-identity permuted copies: a permutation moving units along a cycle
    ``c_1 -> ... -> c_k -> c_1`` costs ``sum ||b_{c_t} - b_{c_t+1}||^2 >= k min_t ||.||^2``,
    which is at least the cost ``2 ||.||^2`` of swapping the closest pair on the cycle. With
    more layers it is the nearest copy that moves one layer only; :func:`nearest_permuted_copy`
    also lets the other layers move.
    """
    best = None
    names = spec.sizes if among is None else [p for p in spec.sizes if p in among]
    for p in names:
        d = transposition_distances(spec, params, p, to=to)
        pairs = _pairs_among(spec.sizes[p], None if among is None else among[p])
        if not pairs.any():
            continue
        masked = torch.where(pairs, d, torch.full_like(d, float("inf")))
        k = int(masked.argmin())
        i, j = divmod(k, spec.sizes[p])
        if best is None or masked[i, j] < best.distance:
            best = Transposition(p, i, j, float(masked[i, j]))
    return best


def swap_table(spec: PermutationSpec, params: Params, *, to: Params | None = None,
               dead: dict[str, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Every single swap of two units of one layer, as columns of equal length (one row per swap).

    ``name``, ``i``, ``j`` (``i < j``): the swap; ``distance``: from ``to`` (default ``params``
    itself) to ``params`` with the two units swapped (:func:`transposition_distances`); with
    ``dead`` (permutation name -> bool per unit, e.g. :func:`dead_units`), ``kind``: ``"live"``
    when neither unit is dead, ``"dead"`` when both are, ``"mixed"`` otherwise. Rows in the
    spec's order, then by ``i``, then ``j``; the same order for any ``to``.
    """
    columns = {"name": [], "i": [], "j": [], "distance": [], "kind": []}
    for p, n in spec.sizes.items():
        i, j = torch.triu_indices(n, n, offset=1)
        columns["name"] += [p] * len(i)
        columns["i"].append(i.numpy())
        columns["j"].append(j.numpy())
        columns["distance"].append(transposition_distances(spec, params, p, to=to)[i, j].numpy())
        if dead is not None:
            both = dead[p].cpu()[i].long() + dead[p].cpu()[j].long()
            columns["kind"].append(np.array(["live", "mixed", "dead"])[both.numpy()])
    table = {"name": np.array(columns["name"], dtype=object)}
    for key in ("i", "j", "distance") + (("kind",) if dead is not None else ()):
        table[key] = np.concatenate(columns[key]) if columns[key] else np.array([])
    return table


def _best_non_identity(gain: np.ndarray) -> np.ndarray:
    """The permutation ``pi != identity`` maximising ``sum_i gain[i, pi[i]]`` (exact).

    If the assignment problem's optimum is not the identity it is the answer. Otherwise every
    permutation loses ``sum_i K[i, pi[i]]`` against the identity, with ``K[i, j] = gain[i, i] -
    gain[i, j]``, a sum over the cycles of ``pi`` of what each cycle loses, each ``>= 0``; so the
    best non-identity permutation is the single cycle that loses least: the shortest cycle
    of the directed graph with edge weights ``K``, found by Floyd-Warshall (``O(n^3)``, vectorised).
    """
    n = len(gain)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    identity = np.arange(n)
    if not np.array_equal(cols, identity) and gain[rows, cols].sum() > gain[identity, identity].sum():
        return cols.astype(np.int64)
    lost = np.diag(gain)[:, None] - gain
    np.fill_diagonal(lost, np.inf)  # after the sweep, lost[i, i] is the shortest cycle through i
    hop = np.broadcast_to(identity, (n, n)).copy()  # hop[i, j]: first unit after i on the path to j
    for k in range(n):
        through = lost[:, k, None] + lost[None, k, :]
        better = through < lost
        lost = np.where(better, through, lost)
        hop = np.where(better, hop[:, k, None], hop)
    start = int(np.argmin(np.diag(lost)))
    cycle, unit = [start], int(hop[start, start])
    while unit != start and unit not in cycle and len(cycle) < n:
        cycle.append(unit)
        unit = int(hop[unit, start])
    pi = identity.copy()
    pi[cycle] = np.roll(cycle, -1)  # position c_t receives unit c_{t+1}
    return pi


def nearest_permuted_copy(spec: PermutationSpec, params: Params, *, max_iter: int = 100) -> tuple[Permutation, float]:
    """Weight matching of ``params`` to itself with the identity excluded: a non-identity
    permutation ``perm`` and ``d(params, apply_permutation(spec, perm, params))``, as small as the
    search finds.

    Matching a network to itself returns the identity (distance 0), so the identity is
    excluded this way: for each permutation ``p`` of the spec in turn, ``p`` is held away from
    the identity and the others are free. Coordinate descent as in :func:`~sgdlab.permutation.weight_matching`,
    but with every floating-point entry voting, BatchNorm statistics included, so that it
    minimises the distance it returns: ``p`` is solved exactly among its non-identity
    permutations (by a shortest-cycle search), the others by plain assignment,
    starting from the identity with ``p`` at its best non-identity permutation, which is
    its nearest transposition. The best over ``p`` is returned.

    Exact for a network with one hidden layer (it is then :func:`nearest_transposition`);
    with more layers a local search, never farther than the nearest transposition, and
    possibly farther than the true nearest copy (the tests compare with every permutation of
    a small MLP). The returned distance counts every floating-point entry, as
    :func:`sgdlab.params.distance` does. Cost per solve of ``p``: one ``n x n`` assignment and an
    ``O(n^3)`` shortest-cycle search.
    """
    check_params(spec, params)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} must be a positive int")
    if not spec.sizes or all(n < 2 for n in spec.sizes.values()):
        raise ValueError("this network has no two hidden units to swap: every permuted copy is the network itself")
    problem = MatchingProblem(spec, params, params, buffers_vote=True)  # the objective is the distance itself
    best = None
    for moved in (p for p, n in spec.sizes.items() if n >= 2):
        perm = {p: np.arange(n) for p, n in spec.sizes.items()}
        for _ in range(max_iter):
            changed = False
            for p in [moved] + [q for q in problem.order if q != moved]:
                gain, rows = problem.gain(p, perm), np.arange(spec.sizes[p])
                if p == moved:
                    cols = _best_non_identity(gain)
                else:
                    cols = linear_sum_assignment(gain, maximize=True)[1].astype(np.int64)
                forced = p == moved and np.array_equal(perm[p], rows)  # the start: leave the identity
                gained = gain[rows, cols].sum() - gain[rows, perm[p]].sum()
                if forced or gained > 1e-12 * np.abs(gain).sum():  # more than rounding: keep it
                    changed |= not np.array_equal(cols, perm[p])
                    perm[p] = cols
            if not changed:
                break
        found = {p: torch.from_numpy(pi) for p, pi in perm.items()}
        d = distance(params, apply_permutation(spec, found, params))
        if best is None or d < best[1]:
            best = (found, d)
    return best


def firing_rates(model: nn.Module, params: Params, x: torch.Tensor, *, chunk_size: int = 1024) -> dict[str, torch.Tensor]:
    """Permutation name -> float per unit: the share of ``x``'s examples on which the unit fires.

    A unit fires on an example when its activation after the ReLU is above 0 there (in eval
    mode, BatchNorm with the running statistics in ``params``), at some spatial position for a
    convolution, at some site where it is seen for a residual stream (see
    :func:`~sgdlab.permutation.activation_matching`). 0 for a unit that never fires on ``x``.
    """
    spec, sites = activation_sites(model, {"params": params}, x, chunk_size, "firing_rates")
    counts = {p: torch.zeros(n, device="cpu") for p, n in spec.sizes.items()}
    for start in range(0, len(x), chunk_size):
        chunk = x[start:start + chunk_size]
        seen = unit_activations(model, params, chunk, sites)
        for p in spec.sizes:
            # (examples, units): fires at some position of some site
            fired = torch.stack([(seen[site] > 0).reshape(len(chunk), -1, spec.sizes[p]).any(1)
                                 for site in spec.activations[p]]).any(0)
            counts[p] += fired.sum(0).cpu().float()
    return {p: c / len(x) for p, c in counts.items()}


def dead_units(model: nn.Module, params: Params, x: torch.Tensor, *, chunk_size: int = 1024) -> dict[str, torch.Tensor]:
    """Permutation name -> bool per unit: the units that take no part in the network's function on ``x``.

    A unit is dead when it fires on no example of ``x`` (:func:`firing_rates` is 0), or when
    every weight that reads it is exactly 0. Swapping two units that never fire gives a copy
    that computes the same function on ``x`` at every point of the straight line between the
    two, for a network without BatchNorm between the layer and its ReLU (a mean of two
    pre-activations <= 0 is <= 0), so such copies are functionally trivial.
    """
    spec = permutation_spec(model)
    silent = {p: rate == 0 for p, rate in firing_rates(model, params, x, chunk_size=chunk_size).items()}
    dead = {}
    for p, n in spec.sizes.items():
        read = torch.zeros(n, dtype=torch.bool, device="cpu")
        for key, names in spec.axes.items():
            for axis, q in enumerate(names):
                if q == p and axis > 0 and key not in spec.buffers:
                    read |= (_rows(params[key], axis) != 0).any(1)
        dead[p] = silent[p] | ~read
    return dead


def swap_midpoint_losses(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, swaps, *,
                         bn: str = "eval") -> np.ndarray:
    """Loss (mean cross-entropy over ``(x, y)``, nats) halfway along the straight line from
    ``params`` to its copy with two units swapped, for each swap ``(name, i, j)`` of ``swaps``
    (units ``i`` and ``j`` of permutation ``name``). Float64 array, one entry per swap.

    Both ends compute the same function; the midpoint is the network with units ``i`` and
    ``j`` both replaced by their average (every tensor's rows ``i`` and ``j`` along the axis
    ``name`` reorders, BatchNorm statistics included). Its loss minus the ends' loss is the
    height of the barrier on that line by the paper's definition when the loss along the
    line peaks at its middle (the line is symmetric about it). ``bn`` as in
    :func:`sgdlab.params.full_loss`. One full-data loss per swap.
    """
    spec = permutation_spec(model)
    check_fits_model(model, params)
    swaps = list(swaps)
    losses = np.empty(len(swaps))
    for k, (name, i, j) in enumerate(swaps):
        if name not in spec.sizes or not (0 <= int(i) < spec.sizes[name] and 0 <= int(j) < spec.sizes[name]):
            raise ValueError(f"swap {k} = {(name, i, j)!r} does not name two units of a permutation of this model; "
                             f"its permutations are {dict(spec.sizes)}")
        mid = dict(params)
        for key, axis in spec.axes_permuted_by(name):
            if params[key].is_floating_point():
                both = torch.tensor([int(i), int(j)], device=params[key].device)
                rows = params[key].index_select(axis, both)
                mid[key] = params[key].index_copy(axis, both, rows.mean(axis, keepdim=True).expand_as(rows))
        losses[k] = full_loss(model, mid, x, y, bn=bn)
    return losses


def nearest_swap_rises(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                       swaps: dict[str, np.ndarray], *, count: int | None = None,
                       bn: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """How much the loss rises halfway to the ``count`` nearest swaps of a :func:`swap_table`
    (all of them when ``None``): ``(order, rise)``.

    ``order``: row indices of ``swaps``, nearest first (a stable sort of ``distance``, so
    equal distances keep the table's order); ``rise``: float64, for each of them
    :func:`swap_midpoint_losses` minus the loss at ``params`` (mean cross-entropy over
    ``(x, y)``, nats; ``bn`` as in :func:`sgdlab.params.full_loss`).
    """
    order = np.argsort(swaps["distance"], kind="stable")[:count]
    halfway = swap_midpoint_losses(model, params, x, y, zip(swaps["name"][order], swaps["i"][order],
                                                             swaps["j"][order]), bn=bn)
    return order, halfway - full_loss(model, params, x, y, bn=bn)


@dataclasses.dataclass(frozen=True)
class DistanceScale:
    """The distances that say whether ``d(w_N, w_M)`` between two snapshots of one run is far.

    Every distance is Euclidean over every floating-point entry (:func:`sgdlab.params.distance`,
    parameter units). ``scale`` holds, by label, ``d(w_N, w_M)`` before and after weight
    matching ``w_M`` to ``w_N``, the nearest swap of two live (and, when there are two, of two
    dead) units of ``w_N``, the nearest permuted copy, the distances to ``random`` permuted
    copies (a list), and the distance from ``w_M`` to another run before and after weight
    matching it to ``w_M``.
    """

    d_NM: float                             # d(w_N, w_M)
    found_identity: bool                    # weight matching w_M to w_N returns the identity
    dead: dict[str, torch.Tensor]           # dead_units of w_N on x
    swaps: dict[str, np.ndarray]            # swap_table of w_N, with each swap's kind
    from_M: np.ndarray                      # the same swapped copies' distances from w_M
    nearest: dict[str, Transposition | None]  # "any", "live", "dead": nearest_transposition
    copy_perm: Permutation                  # nearest_permuted_copy of w_N
    copy_distance: float
    random_copies: list[float]              # d(w_N, P w_N) for random permutations P
    aligned_other: Params                   # the other run, weight-matched to w_M
    scale: dict[str, float | list[float]]

    @property
    def units(self) -> int:
        """Hidden units of the network (every permutation's size, summed)."""
        return sum(len(mask) for mask in self.dead.values())

    @property
    def dead_share(self) -> float:
        """The share of :attr:`units` that are dead."""
        return sum(int(mask.sum()) for mask in self.dead.values()) / self.units

    @property
    def live_swaps(self) -> np.ndarray:
        """Bool per row of ``swaps``: a swap of two live units."""
        return self.swaps["kind"] == "live"

    @property
    def closer(self) -> float:
        """The share of swaps of two live units whose copy lies nearer to ``w_N`` than ``w_M``."""
        return float(np.mean(self.swaps["distance"][self.live_swaps] < self.d_NM))


def distance_scale(model: nn.Module, w_N: Params, w_M: Params, w_other: Params, x: torch.Tensor, *,
                   random: int = 20) -> DistanceScale:
    """:class:`DistanceScale` of ``w_N`` and ``w_M`` (two snapshots of one run of ``model``),
    ``w_other`` (another run) and ``random`` random permutations (seeds ``0 .. random - 1`` of
    :func:`~sgdlab.permutation.random_permutation`); dead units measured on ``x``."""
    spec = permutation_spec(model)
    d_NM = distance(w_N, w_M)
    matched = weight_matching(spec, w_N, w_M)
    identity = identity_permutation(spec)
    dead = dead_units(model, w_N, x)
    live = {p: ~mask for p, mask in dead.items()}
    nearest = {kind: nearest_transposition(spec, w_N, among=among)
               for kind, among in (("any", None), ("live", live), ("dead", dead))}
    copy_perm, copy_distance = nearest_permuted_copy(spec, w_N)
    random_copies = [distance(w_N, apply_permutation(spec, random_permutation(spec, seed), w_N))
                     for seed in range(random)]
    aligned_other = apply_permutation(spec, weight_matching(spec, w_M, w_other), w_other)
    scale = {
        "d(w_N, w_M)": d_NM,
        "d(w_N, w_M) after weight matching": distance(w_N, apply_permutation(spec, matched, w_M)),
        "nearest swap of two live units": nearest["live"].distance,
        **({"nearest swap of two dead units": nearest["dead"].distance} if nearest["dead"] is not None else {}),
        "nearest copy, weight matching without identity": copy_distance,
        f"{random} random permutations of w_N": random_copies,
        "d(w_M, another run)": distance(w_M, w_other),
        "d(w_M, another run) after weight matching": distance(w_M, aligned_other),
    }
    return DistanceScale(
        d_NM=d_NM, found_identity=all(torch.equal(matched[p], identity[p]) for p in spec.sizes), dead=dead,
        swaps=swap_table(spec, w_N, dead=dead), from_M=swap_table(spec, w_N, to=w_M)["distance"], nearest=nearest,
        copy_perm=copy_perm, copy_distance=copy_distance, random_copies=random_copies, aligned_other=aligned_other,
        scale=scale)

"""Permutation symmetry: reordering hidden units leaves a network's function unchanged.

Swap two hidden units of a layer, together with their incoming weights, biases, BatchNorm
entries and outgoing weights, and the network computes exactly the same function at a
different point of weight space. This module describes those symmetries as data and
uses them to align two networks before comparing them (Entezari et al. 2022; Ainsworth,
Hayase and Srinivasa 2023, "Git Re-Basin").

The spec
--------
``permutation_spec(model)`` reads the model's structure and returns a
:class:`PermutationSpec`: ``sizes`` maps each permutation's name to how many units it
reorders, and ``axes`` maps every name of ``model.state_dict()`` to one entry per axis of
that tensor, the name of the permutation that reorders the axis or ``None``. For the MLP
``fc1 -> bn1 -> relu -> out``::

    sizes = {"fc1": 64}
    axes  = {"fc1.weight": ("fc1", None), "fc1.bias": ("fc1",),
             "bn1.weight": ("fc1",), "bn1.bias": ("fc1",),
             "bn1.running_mean": ("fc1",), "bn1.running_var": ("fc1",),
             "bn1.num_batches_tracked": (),
             "out.weight": (None, "fc1"), "out.bias": (None,)}

A permutation is named after the layer whose outputs it reorders (``fc1``, ``conv3``,
``stage2.1.conv1``). Inputs and logits are never permuted.

Residual networks: a block adds its output to its input, so every tensor that writes
into the residual stream (the stem's conv and BN, each block's ``conv2``/``bn2``, the
shortcut's conv and BN) must reorder its outputs the same way. The stream therefore has
one permutation per stage, ``stage{i}.stream``, which also reorders the inputs of
every layer that reads the stream (each block's ``conv1``, the shortcut, the head); the
stem writes stage 1's stream. Each block's inner channels (``conv1``/``bn1`` outputs)
have their own permutation, named after ``conv1``.

Conventions
-----------
* A permutation ``perm[name]`` is a LongTensor ``pi`` holding ``0 .. n-1`` once each.
  Applying it puts old unit ``pi[i]`` in position ``i`` on every axis it reorders:
  ``new.index_select(axis, pi)``, as ``x[pi]`` does for a vector.
* Applying ``perm`` and then ``q`` is applying the single permutation ``perm[name][q[name]]``;
  ``inverse_permutation(perm)`` undoes ``perm`` exactly.
* ``weight_matching(spec, a, b)`` and ``activation_matching(model, a, b, x)`` return the
  permutation that, applied to ``b``, brings it closest to ``a``: the aligned network is
  ``apply_permutation(spec, perm, b)``. ``a`` is never changed.
* BatchNorm running means and variances are reordered with their channels, so the
  permuted network agrees with the original in eval mode as well as with batch
  statistics; ``num_batches_tracked`` is left as it is. They follow the weights but do not
  vote in weight matching (they are statistics of the data, not weights).

The nearest permuted copy
-------------------------
How far the closest permuted copy of one network lies (every swap of two units, weight
matching with the identity excluded, dead units, the loss halfway to a swap) is measured
by :mod:`sgdlab.nearest_copy`, built on this module.

The module is long because weight matching (the coordinate descent over the spec) and
activation matching share the spec, its checks and the application of a permutation; each
part is short, and splitting them would make each import the other's internals.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.func import functional_call

from .models import ARCHITECTURES, BasicBlock, ResNet
from .params import Params, check_fits_model, check_same_keys, evaluation

Permutation = Dict[str, torch.Tensor]

AFFINE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d)
# layers that act on each unit (channel) separately, so a reordering passes through them
PER_UNIT_LAYERS = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten)


@dataclasses.dataclass(frozen=True, repr=False)
class PermutationSpec:
    """Which permutation reorders which axis of which tensor (see the module docstring).

    ``sizes``: permutation name -> number of units it reorders.
    ``axes``: every parameter and buffer name -> per axis, a permutation name or ``None``.
    ``buffers``: the names in ``axes`` that are buffers (BatchNorm statistics): permuted,
    but left out of weight matching.
    ``activations``: permutation name -> the modules whose output, after a ReLU, shows its
    units on axis 1 (where :func:`activation_matching` looks at them).
    """

    sizes: dict[str, int]
    axes: dict[str, tuple[str | None, ...]]
    buffers: frozenset[str]
    activations: dict[str, tuple[str, ...]]

    def axes_permuted_by(self, name: str) -> list[tuple[str, int]]:
        """``(tensor name, axis)`` for every axis that permutation ``name`` reorders."""
        if name not in self.sizes:
            raise ValueError(f"permutation {name!r} is not in this spec; its permutations are: {', '.join(self.sizes)}")
        return [(key, axis) for key, names in self.axes.items() for axis, p in enumerate(names) if p == name]

    def __repr__(self) -> str:
        units = sum(self.sizes.values())
        return f"PermutationSpec({len(self.sizes)} permutations of {units} units in all, over {len(self.axes)} tensors)"


class _SpecBuilder:
    """Collects a spec while the model is walked layer by layer (one call per layer)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.sizes: dict[str, int] = {}
        self.axes: dict[str, tuple[str | None, ...]] = {}
        self.activations: dict[str, list[str]] = {}

    def _units(self, name: str, perm: str, size: int) -> None:
        """Record that ``perm`` reorders ``size`` units (one permutation may be written by several layers)."""
        if self.sizes.setdefault(perm, size) != size:
            raise ValueError(f"module {name!r} has {size} units where permutation {perm!r} reorders "
                             f"{self.sizes[perm]}; permutation_spec cannot describe this model")

    def affine(self, name: str, layer: nn.Module, out: str | None, into: str | None) -> None:
        """A Linear or Conv whose outputs are reordered by ``out`` and inputs by ``into``."""
        if getattr(layer, "groups", 1) != 1:
            raise ValueError(f"module {name!r} is a grouped convolution (groups={layer.groups}); only groups=1 is "
                             f"supported")
        out_units, in_units = layer.weight.shape[:2]
        if into is not None and in_units != self.sizes[into]:
            raise ValueError(f"module {name!r} takes {in_units} inputs but follows {self.sizes[into]} units of "
                             f"permutation "
                             f"{into!r}; only layers fed one input per unit (e.g. after 1x1 pooling) are supported")
        if out is not None:
            self._units(name, out, out_units)
        self.axes[f"{name}.weight"] = (out, into) + (None,) * (layer.weight.dim() - 2)
        if layer.bias is not None:
            self.axes[f"{name}.bias"] = (out,)

    def norm(self, name: str, layer: nn.Module, units: str | None) -> None:
        """A BatchNorm over the units reordered by ``units``: affine weights and running statistics follow them."""
        if units is not None:
            self._units(name, units, layer.num_features)
        for local, tensor in layer.state_dict().items():
            self.axes[f"{name}.{local}"] = (units,) * tensor.dim()  # num_batches_tracked is 0-d: ()

    def seen_at(self, units: str | None, module_name: str) -> None:
        """The output of ``module_name``, after a ReLU, shows the units of ``units`` on axis 1."""
        if units is not None:
            self.activations.setdefault(units, []).append(module_name)

    def spec(self) -> PermutationSpec:
        state = self.model.state_dict()
        missing = [key for key in state if key not in self.axes]
        if missing:
            raise ValueError(f"permutation_spec does not know how to permute {missing[:5]} of this "
                             f"{type(self.model).__name__}; it supports the networks of make_model")
        buffers = frozenset(name for name, _ in self.model.named_buffers())
        return PermutationSpec(dict(self.sizes), {key: self.axes[key] for key in state}, buffers,
                               {p: tuple(sites) for p, sites in self.activations.items()})


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation symmetries of a network built by :func:`~sgdlab.models.make_model`.

    Works for every architecture there (``mlp``, ``mlp-paper``, ``cnn``, ``vgg11``, with or
    without BatchNorm, and the ResNets), and for any ``nn.Sequential`` of Linear, Conv1d/2d,
    BatchNorm, ReLU, pooling and Flatten layers. Raises ``ValueError`` naming the module it
    cannot describe.
    """
    builder = _SpecBuilder(model)
    if isinstance(model, ResNet):
        _resnet(builder, model)
    elif isinstance(model, nn.Sequential):
        _chain(builder, model)
    else:
        raise ValueError(f"permutation_spec supports the networks of make_model ({', '.join(ARCHITECTURES)}) and "
                         f"nn.Sequential chains; got a {type(model).__name__}")
    return builder.spec()


def _chain(builder: _SpecBuilder, model: nn.Sequential) -> None:
    """MLP, cnn, VGG: each hidden layer's outputs get a permutation named after the layer."""
    layers = list(model.named_children())
    affine = [name for name, layer in layers if isinstance(layer, AFFINE_LAYERS)]
    units = None  # the inputs are not permuted
    for name, layer in layers:
        if isinstance(layer, AFFINE_LAYERS):
            out = None if name == affine[-1] else name  # the logits are not permuted
            builder.affine(name, layer, out, units)
            units = out
        elif isinstance(layer, NORM_LAYERS):
            builder.norm(name, layer, units)
        elif isinstance(layer, nn.ReLU):
            builder.seen_at(units, name)
        elif not isinstance(layer, PER_UNIT_LAYERS):
            raise ValueError(f"module {name!r} of this {type(model).__name__} is a {type(layer).__name__}; "
                             f"permutation_spec supports Linear, Conv1d/2d, BatchNorm, ReLU, pooling and Flatten")


def _resnet(builder: _SpecBuilder, model: ResNet) -> None:
    """Stem, stages of basic blocks, head: one stream permutation per stage, one inner one per block."""
    stages = [(name, stage) for name, stage in model.named_children() if name.startswith("stage")]
    # the stem writes stage 1's stream when stage 1's first block adds into it unchanged
    first_block = stages[0][1][0]
    stream = "stage1.stream" if isinstance(first_block.shortcut, nn.Identity) else "stem"
    builder.affine("stem.conv", model.stem.conv, stream, None)
    builder.norm("stem.bn", model.stem.bn, stream)
    builder.seen_at(stream, "stem")
    for stage_name, stage in stages:
        for j, block in enumerate(stage):
            name = f"{stage_name}.{j}"
            if not isinstance(block, BasicBlock):
                raise ValueError(f"module {name!r} is a {type(block).__name__}; permutation_spec supports BasicBlock")
            reads, inner = stream, f"{name}.conv1"
            if not isinstance(block.shortcut, nn.Identity):  # a 1x1 conv + BN starts a new stream
                stream = f"{stage_name}.stream"
                builder.affine(f"{name}.shortcut.conv", block.shortcut.conv, stream, reads)
                builder.norm(f"{name}.shortcut.bn", block.shortcut.bn, stream)
            builder.affine(f"{name}.conv1", block.conv1, inner, reads)
            builder.norm(f"{name}.bn1", block.bn1, inner)
            builder.seen_at(inner, f"{name}.bn1")
            builder.affine(f"{name}.conv2", block.conv2, stream, inner)
            builder.norm(f"{name}.bn2", block.bn2, stream)
            builder.seen_at(stream, name)
    builder.affine("head", model.head, None, stream)


def identity_permutation(spec: PermutationSpec) -> Permutation:
    """The permutation that changes nothing: ``0, 1, ..., n-1`` for each name."""
    return {name: torch.arange(size) for name, size in spec.sizes.items()}


def random_permutation(spec: PermutationSpec, seed: int) -> Permutation:
    """A uniformly random permutation for each name, drawn from ``seed`` (the global generator is untouched)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an int")
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randperm(size, generator=generator) for name, size in spec.sizes.items()}


def inverse_permutation(perm: Permutation) -> Permutation:
    """The permutation that undoes ``perm``: applying ``perm`` and then this gives back the original."""
    return {name: torch.argsort(torch.as_tensor(pi)) for name, pi in perm.items()}


def check_permutation(spec: PermutationSpec, perm: Permutation) -> Permutation:
    """``perm`` as LongTensors, or ``ValueError`` unless it has exactly the spec's names, each a permutation of its size."""
    if not isinstance(perm, dict):
        raise ValueError(f"perm must be a dict name -> permutation, got a {type(perm).__name__}")
    if perm.keys() != spec.sizes.keys():
        missing = [name for name in spec.sizes if name not in perm][:5]
        unknown = [name for name in perm if name not in spec.sizes][:5]
        raise ValueError(f"perm does not fit the spec: missing permutations {missing}, unknown permutations {unknown}; "
                         f"the spec's permutations are: {', '.join(spec.sizes)}")
    checked = {}
    for name, size in spec.sizes.items():
        pi = torch.as_tensor(perm[name])
        if pi.dtype.is_floating_point or pi.dtype == torch.bool or pi.shape != (size,):
            raise ValueError(f"perm[{name!r}] must be {size} integers (permutation {name!r} reorders {size} units); "
                             f"got dtype {pi.dtype}, shape {tuple(pi.shape)}")
        if not torch.equal(torch.sort(pi.cpu()).values, torch.arange(size)):
            raise ValueError(f"perm[{name!r}] = {pi.tolist()[:10]}{'...' if size > 10 else ''} is not a permutation "
                             f"of 0..{size - 1}: each of those must appear exactly once")
        checked[name] = pi.long()
    return checked


def check_params(spec: PermutationSpec, params: Params, *, name: str = "params") -> None:
    """``ValueError`` unless ``params`` has exactly the spec's names, with the sizes its permutations need."""
    if params.keys() != spec.axes.keys():
        missing = [key for key in spec.axes if key not in params][:5]
        extra = [key for key in params if key not in spec.axes][:5]
        raise ValueError(f"{name} does not fit the spec: missing keys {missing}, unexpected keys {extra}")
    for key, names in spec.axes.items():
        shape = tuple(params[key].shape)
        if len(shape) != len(names):
            raise ValueError(f"{name}[{key!r}] has shape {shape}; the spec needs a tensor with {len(names)} axes")
        for axis, p in enumerate(names):
            if p is not None and shape[axis] != spec.sizes[p]:
                raise ValueError(f"{name}[{key!r}] has shape {shape}; axis {axis} is reordered by permutation {p!r} "
                                 f"of {spec.sizes[p]} units")


def _permute(tensor: torch.Tensor, names: tuple[str | None, ...], perm: Permutation) -> torch.Tensor:
    """``tensor`` with each axis reordered by the permutation ``names`` gives it."""
    for axis, p in enumerate(names):
        if p is not None:
            tensor = tensor.index_select(axis, perm[p].to(tensor.device))
    return tensor


def apply_permutation(spec: PermutationSpec, perm: Permutation, params: Params) -> Params:
    """``params`` with every axis reordered by its permutation: the same function, other weights.

    Position ``i`` of an axis reordered by ``perm[name]`` receives old unit ``perm[name][i]``.
    Entries that no permutation touches are returned as they are (the same tensors).
    """
    check_params(spec, params)
    perm = check_permutation(spec, perm)
    return {key: _permute(tensor, spec.axes[key], perm) for key, tensor in params.items()}


def weight_matching(spec: PermutationSpec, params_a: Params, params_b: Params, *, max_iter: int = 100, seed: int = 0,
                    restarts: int = 1) -> Permutation:
    """The permutation of ``b`` whose weights best match ``a``'s (Git Re-Basin's Algorithm 1, started layer-wise).

    Maximises the agreement, the sum over all weights of ``<W_a, W_b permuted>`` (which
    minimises the L2 distance between ``a`` and the aligned ``b``), by coordinate descent:
    holding the other permutations fixed, one permutation is solved exactly with
    ``scipy.optimize.linear_sum_assignment``. Only parameters vote: BatchNorm running
    statistics are not weights.

    * The first pass visits the permutations in the spec's order, from the input to the
      logits, and matches each on the weights whose other axes are already matched (inputs,
      logits, or permutations solved earlier in the pass), as layer-wise matching does
      (Singh and Jaggi 2020); a weight that still depends on an unmatched permutation does
      not vote yet. For the MLP ``fc1 -> fc2 -> out``: ``fc1`` is matched on ``fc1``'s weights
      and bias, then ``fc2`` on ``fc2``'s weights (their inputs reordered by the ``fc1`` just
      found), its bias and ``out``'s weights. The descent thus starts from a pairing the
      weights support rather than from the identity, an arbitrary one; on trained MLPs it
      ends in better optima (bench/permutation.py).
    * Every later pass visits the permutations in a random order (drawn from ``seed``), all
      weights voting. A permutation changes only when that raises the agreement by more
      than rounding; one whose neighbours (the permutations it shares a weight with) have
      not changed since it was last solved is skipped, since it would find the same answer.
      The search stops when no permutation can improve, i.e. after a pass that improves
      nothing, or after ``max_iter`` passes (the first pass counts).

    ``restarts``: restart ``r`` starts its first pass ``r`` places further along the spec's
    order (wrapping around), so that each restart matches another layer first; the run with
    the highest agreement is kept (the earliest on a tie), so more restarts never match
    worse than one. Cost per solve: a matrix product per weight that the permutation shares
    with another one and an ``n x n`` assignment; each restart costs about one more run. Both parameter sets are
    copied to float64 on the CPU for the duration of the call. Returns ``perm`` such that
    ``apply_permutation(spec, perm, params_b)`` is ``b`` aligned to ``a``.
    """
    check_params(spec, params_a, name="params_a")
    check_params(spec, params_b, name="params_b")
    check_same_keys(params_a, params_b)
    for name, params in (("params_a", params_a), ("params_b", params_b)):
        for key in spec.axes:
            if not torch.isfinite(params[key]).all():
                raise ValueError(f"{name}[{key!r}] holds NaN or infinite values; weight matching needs finite weights "
                                 "(a diverged run has none to match)")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} must be a positive int")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an int")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts={restarts!r} must be a positive int")
    problem = MatchingProblem(spec, params_a, params_b)
    runs = [problem.coordinate_descent(max_iter, seed, shift) for shift in range(restarts)]
    best = runs[0] if restarts == 1 else max(runs, key=problem.agreement)
    return {p: torch.from_numpy(pi) for p, pi in best.items()}


class MatchingProblem:
    """Weight matching of ``b`` to ``a``, prepared once and shared by every restart.

    Everything is float64 numpy on the CPU; permutations are int64 arrays here (LongTensors
    outside), with the module's conventions. For permutation ``p`` and each weight it reorders on one axis,
    ``gain[i, j]``, the inner product of ``a``'s unit ``i`` with ``b``'s unit ``j`` over that
    weight, is ``A @ B'.T``: ``A`` is ``a``'s weight with the axis moved first and the rest
    flattened, ``(n, rest)``; ``B'`` is ``b``'s, with its other axes reordered by their
    current permutations. Weights with no other reordered axis give the same ``gain`` every
    time: they are summed once, in ``fixed[p]``.
    """

    def __init__(self, spec: PermutationSpec, params_a: Params, params_b: Params, *, buffers_vote: bool = False):
        self.spec, self.order = spec, list(spec.sizes)
        weights = [key for key in spec.axes if (buffers_vote or key not in spec.buffers)
                   and params_a[key].is_floating_point() and any(spec.axes[key])]
        as_numpy = lambda t: t.detach().to("cpu", torch.float64).numpy()
        self.a = {key: as_numpy(params_a[key]) for key in weights}
        self.b = {key: as_numpy(params_b[key]) for key in weights}
        self.fixed = {p: np.zeros((n, n)) for p, n in spec.sizes.items()}
        self.varying = {p: [] for p in spec.sizes}  # (A, B with the axis first, [(axis of B, permutation)])
        self.neighbours = {p: set() for p in spec.sizes}
        for key in weights:
            names = spec.axes[key]
            for axis, p in enumerate(names):
                if p is None:
                    continue
                n = spec.sizes[p]
                a_rows = np.moveaxis(self.a[key], axis, 0).reshape(n, -1)
                b_rows = np.moveaxis(self.b[key], axis, 0)
                # after moveaxis, the axes before ``axis`` sit one place later
                others = [(other + (other < axis), q) for other, q in enumerate(names) if q is not None and other != axis]
                if others:
                    self.varying[p].append((np.ascontiguousarray(a_rows), b_rows, others))
                    self.neighbours[p].update(q for _, q in others)
                else:
                    self.fixed[p] += a_rows @ b_rows.reshape(n, -1).T

    def gain(self, p: str, perm: dict, matched: set | None = None) -> np.ndarray:
        """``(n, n)``: the agreement gained by putting ``b``'s unit ``j`` in ``a``'s position ``i``
        under ``p``; with ``matched``, only the weights whose other permutations are in it vote."""
        gain = self.fixed[p].copy()
        for a_rows, b_rows, others in self.varying[p]:
            if matched is not None and any(q not in matched for _, q in others):
                continue
            for axis, q in others:
                b_rows = np.take(b_rows, perm[q], axis=axis)
            gain += a_rows @ b_rows.reshape(len(b_rows), -1).T
        return gain

    def coordinate_descent(self, max_iter: int, seed: int, shift: int) -> dict:
        """One run (see :func:`weight_matching`): the first pass layer-wise from place ``shift`` of
        the spec's order, then passes in random orders drawn from ``seed``."""
        perm = {p: np.arange(n) for p, n in self.spec.sizes.items()}
        # stale: solving it again might improve (not yet solved with every weight voting since its neighbours changed)
        stale = dict.fromkeys(self.order, True)
        matched = set()  # the first pass's permutations solved so far
        visits = np.random.default_rng(seed)
        shift %= max(len(self.order), 1)
        for iteration in range(max_iter):
            if iteration == 0:
                order = self.order[shift:] + self.order[:shift]
            else:
                order = visits.permutation(self.order).tolist()
            for p in order:
                if not stale[p]:
                    continue
                first = iteration == 0
                gain = self.gain(p, perm, matched if first else None)
                rows, cols = linear_sum_assignment(gain, maximize=True)
                old, new = gain[rows, perm[p]].sum(), gain[rows, cols].sum()
                # a first-pass solve with weights left out must be checked again with all of them
                stale[p] = first and any(q not in matched for _, _, others in self.varying[p] for _, q in others)
                matched.add(p)
                if new - old > 1e-12 * np.abs(gain).sum():  # more than rounding: keep it
                    perm[p] = cols.astype(np.int64)
                    for q in self.neighbours[p]:
                        stale[q] = True
            if not any(stale.values()):
                break
        return perm

    def agreement(self, perm: dict) -> float:
        """The sum over the weights that some permutation reorders of ``<W_a, W_b permuted>``."""
        total = 0.0
        for key, w_b in self.b.items():
            for axis, p in enumerate(self.spec.axes[key]):
                if p is not None:
                    w_b = np.take(w_b, perm[p], axis=axis)
            total += float(np.vdot(self.a[key], w_b))
        return total


def activation_matching(model: nn.Module, params_a: Params, params_b: Params, x: torch.Tensor, *, chunk_size: int = 1024) -> Permutation:
    """The permutation of ``b`` whose hidden units fire most like ``a``'s on the inputs ``x``.

    For each permutation, the post-ReLU activations of its units are recorded over ``x``
    in eval mode (BatchNorm uses the running statistics in the params); the spatial
    positions of a convolution count as further samples. ``a``'s unit ``i`` and ``b``'s
    unit ``j`` are compared by the Pearson correlation of their activations, and one
    ``linear_sum_assignment`` per permutation maximises the summed correlation of the
    matched pairs. A unit whose activation never varies over ``x`` (a dead ReLU, say)
    correlates 0 with everything, so such units are paired with each other in no
    particular order: the data cannot tell them apart.

    Residual stream: a stage's stream permutation reorders the output of the stem (stage
    1) and of every block of the stage, so its correlation matrix is the sum of the
    correlation matrices at each of those outputs. A block's inner channels are seen after
    ``bn1`` and the ReLU. Returns ``perm`` such that ``apply_permutation(spec, perm,
    params_b)`` is ``b`` aligned to ``a``, for ``spec = permutation_spec(model)``.
    """
    spec, sites = activation_sites(model, {"params_a": params_a, "params_b": params_b}, x, chunk_size,
                                    "activation matching")
    moments = {site: _Moments() for site in sites}
    for start in range(0, len(x), chunk_size):
        chunk = x[start:start + chunk_size]
        seen_a = unit_activations(model, params_a, chunk, sites)
        seen_b = unit_activations(model, params_b, chunk, sites)
        for site in sites:
            moments[site].add(seen_a[site], seen_b[site])
    perm = {}
    for p in spec.sizes:
        correlation = sum(moments[site].correlation() for site in spec.activations[p])
        _, cols = linear_sum_assignment(correlation.cpu().numpy(), maximize=True)
        perm[p] = torch.from_numpy(cols).long()
    return perm


def activation_sites(model: nn.Module, params: dict[str, Params], x: torch.Tensor, chunk_size: int,
                      what: str) -> tuple[PermutationSpec, list[str]]:
    """The spec of ``model`` and the modules where its units are seen (sorted), after checking
    the arguments of ``what``: each of ``params`` (argument name -> parameters), ``x`` and ``chunk_size``."""
    spec = permutation_spec(model)
    for name, values in params.items():
        check_fits_model(model, values, name=name)
    if len(x) == 0:
        raise ValueError(f"x holds no examples; {what} needs at least one")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
    missing = [p for p in spec.sizes if p not in spec.activations]
    if missing:
        raise ValueError(f"the units of permutations {missing} are not followed by a ReLU in this model, "
                         f"so {what} cannot see them")
    return spec, sorted({site for names in spec.activations.values() for site in names})


def unit_activations(model: nn.Module, params: Params, x: torch.Tensor, sites: list[str]) -> dict[str, torch.Tensor]:
    """ReLU of each site's output, as ``(samples, units)``: batch and spatial positions are samples."""
    seen = {}

    def record(site):
        def hook(module, inputs, output):
            units = output.shape[1]
            seen[site] = F.relu(output).movedim(1, -1).reshape(-1, units)
        return hook

    handles = [model.get_submodule(site).register_forward_hook(record(site)) for site in sites]
    try:
        with evaluation(model), torch.no_grad():
            functional_call(model, params, (x,))
    finally:
        for handle in handles:
            handle.remove()
    return seen


class _Moments:
    """Running sums, in float64, from which the correlation of every unit of ``a`` with every unit of ``b`` follows."""

    def __init__(self):
        self.count = 0
        self.sum_a = self.sum_b = self.sum_aa = self.sum_bb = self.sum_ab = 0

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.double(), b.double()  # (samples, units)
        self.count += len(a)
        self.sum_a = self.sum_a + a.sum(0)
        self.sum_b = self.sum_b + b.sum(0)
        self.sum_aa = self.sum_aa + (a * a).sum(0)
        self.sum_bb = self.sum_bb + (b * b).sum(0)
        self.sum_ab = self.sum_ab + a.T @ b

    def correlation(self) -> torch.Tensor:
        mean_a, mean_b = self.sum_a / self.count, self.sum_b / self.count
        covariance = self.sum_ab / self.count - torch.outer(mean_a, mean_b)
        std_a = (self.sum_aa / self.count - mean_a ** 2).clamp_min(0).sqrt()
        std_b = (self.sum_bb / self.count - mean_b ** 2).clamp_min(0).sqrt()
        return covariance / torch.outer(std_a, std_b).clamp_min(1e-12)

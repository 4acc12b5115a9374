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
Every permuted copy ``apply_permutation(spec, perm, w)`` computes ``w``'s function; the
nearest one sets the scale on which a distance in weight space is "far". A random
permutation moves almost every unit and lands far away; the nearest copy is found by
:func:`transposition_distances` / :func:`nearest_transposition` (every swap of two units, in
closed form, exact for one hidden layer) and :func:`nearest_permuted_copy` (weight matching
with the identity excluded). A swap of two dead units (:func:`dead_units`) is trivial: the
straight line to it keeps the function; :func:`swap_midpoint_losses` measures how far the
line to any swap moves the loss. Distances count every floating-point entry, as
:func:`sgdlab.params.distance` does.
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
from .params import Params, check_fits_model, check_same_keys, distance, full_loss

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
            raise ValueError(f"module {name!r} is a grouped convolution (groups={layer.groups}); only groups=1 is supported")
        out_units, in_units = layer.weight.shape[:2]
        if into is not None and in_units != self.sizes[into]:
            raise ValueError(f"module {name!r} takes {in_units} inputs but follows {self.sizes[into]} units of permutation "
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
    problem = _MatchingProblem(spec, params_a, params_b)
    runs = [problem.coordinate_descent(max_iter, seed, shift) for shift in range(restarts)]
    best = runs[0] if restarts == 1 else max(runs, key=problem.agreement)
    return {p: torch.from_numpy(pi) for p, pi in best.items()}


class _MatchingProblem:
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
    spec = permutation_spec(model)
    check_fits_model(model, params_a, name="params_a")
    check_fits_model(model, params_b, name="params_b")
    if len(x) == 0:
        raise ValueError("x holds no examples; activation matching needs at least one")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
    missing = [p for p in spec.sizes if p not in spec.activations]
    if missing:
        raise ValueError(f"the units of permutations {missing} are not followed by a ReLU in this model, "
                         f"so activation matching cannot see them")
    sites = sorted({site for names in spec.activations.values() for site in names})
    moments = {site: _Moments() for site in sites}
    for start in range(0, len(x), chunk_size):
        chunk = x[start:start + chunk_size]
        seen_a = _activations(model, params_a, chunk, sites)
        seen_b = _activations(model, params_b, chunk, sites)
        for site in sites:
            moments[site].add(seen_a[site], seen_b[site])
    perm = {}
    for p in spec.sizes:
        correlation = sum(moments[site].correlation() for site in spec.activations[p])
        _, cols = linear_sum_assignment(correlation.cpu().numpy(), maximize=True)
        perm[p] = torch.from_numpy(cols).long()
    return perm


def _activations(model: nn.Module, params: Params, x: torch.Tensor, sites: list[str]) -> dict[str, torch.Tensor]:
    """ReLU of each site's output, as ``(samples, units)``: batch and spatial positions are samples."""
    seen = {}

    def record(site):
        def hook(module, inputs, output):
            units = output.shape[1]
            seen[site] = F.relu(output).movedim(1, -1).reshape(-1, units)
        return hook

    handles = [model.get_submodule(site).register_forward_hook(record(site)) for site in sites]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            functional_call(model, params, (x,))
    finally:
        model.train(was_training)
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


# --- The nearest permuted copy of one network ------------------------------------------------------------------
#
# d(w, P w) over all non-identity permutations P: the scale on which a distance travelled by SGD is "far".
# Distances here are Euclidean over every floating-point entry of ``params``, BatchNorm running
# statistics included when the dict holds them (as sgdlab.distance counts them), so they compare
# directly with sgdlab.distance between two snapshots of the same dict.


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
    the identity and the others are free. Coordinate descent as in :func:`weight_matching`,
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
    problem = _MatchingProblem(spec, params, params, buffers_vote=True)  # the objective is the distance itself
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
    :func:`activation_matching`). 0 for a unit that never fires on ``x``.
    """
    spec = permutation_spec(model)
    check_fits_model(model, params)
    if len(x) == 0:
        raise ValueError("x holds no examples; firing_rates needs at least one")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
    missing = [p for p in spec.sizes if p not in spec.activations]
    if missing:
        raise ValueError(f"the units of permutations {missing} are not followed by a ReLU in this model")
    sites = sorted({site for names in spec.activations.values() for site in names})
    counts = {p: torch.zeros(n, device="cpu") for p, n in spec.sizes.items()}
    for start in range(0, len(x), chunk_size):
        chunk = x[start:start + chunk_size]
        seen = _activations(model, params, chunk, sites)
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

"""The loss over a fixed set of examples as a function of the parameters, with exact
Hessian-vector products, and what is built on them: the gradient, H v, the top eigenvalues
(by :func:`sgdlab.lanczos.lanczos`) and the alignment of mini-batch gradients with H.

Section 4 of "A Walk with SGD" (Xing, Arpit, Tsirigotis, Bengio 2018) explains why large
batches explore less: their gradients line up with the sharp directions of the Hessian
(alignment, the paper's eq. 4).

Conventions
-----------
* Hessian: of the *mean* cross-entropy over a fixed sample ``(x, y)`` (the whole training set
  unless a function says otherwise), with respect to the trainable parameters only, the
  names of ``model.named_parameters()``. BatchNorm running statistics, present in ``params``
  (see :mod:`sgdlab.params`), are constants, never variables.
* BatchNorm: ``bn="eval"`` (default) normalises with the running statistics held in
  ``params``, like :func:`sgdlab.params.loss_and_accuracy`; ``bn="batch"`` normalises each
  chunk with its own statistics (then results depend on ``chunk_size``) and updates nothing.
* Vectors ``v`` and results are dicts over the trainable names, shaped like the parameters.
* Units: the loss is in nats, so the Hessian, its eigenvalues and the alignment
  ``g^T H g / ||g||^2`` are in nats per squared unit of parameter. Plain gradient descent
  with learning rate ``lr`` is stable on a quadratic only while the top eigenvalue is below
  ``2 / lr``.
* Chunks: sums over the data are taken in chunks of at most ``chunk_size`` examples, each
  weighted by its size / N, so memory is bounded by one chunk's graph. ``chunk_size=None``
  picks the largest chunk whose estimated graph fits ``memory_budget`` bytes; an explicit
  ``chunk_size`` (or any request) whose estimate exceeds the budget raises ``ValueError``.
  Where many products are taken at one point (:func:`top_eigenvalues`, :func:`alignment`),
  the graphs of all chunks are built once and kept when together they fit the budget.
* Hessian-vector products are exact (no finite differences) and come two ways, which agree to
  float rounding: ``"reverse-over-reverse"`` (default) differentiates ``<g, v>`` by a second
  backward pass through the gradient's graph; ``"forward-over-reverse"`` pushes the tangent
  ``v`` forward through the gradient computation (``torch.func.jvp`` of ``grad``).
  ``bench/curvature.py`` measures what each costs in gradients (PyTorch's second derivatives
  of convolutions are dear).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from .checks import check_int
from .lanczos import lanczos
from .params import BN_MODES, Params, check_fits_model, evaluation, flatten, unflatten

DEFAULT_MEMORY_BUDGET = 2 * 2**30   # bytes a single request may use, by our estimate
MAX_CHUNK_SIZE = 4096               # the automatic chunk size never exceeds this
GRAPH_FACTOR = 4                    # graph bytes per byte of activations: activations, tangents, both backward passes
HVP_MODES = ("reverse-over-reverse", "forward-over-reverse")


def trainable_names(model: nn.Module) -> list[str]:
    """The names of the variables of every Hessian here: ``model.named_parameters()``, in order."""
    return [name for name, _ in model.named_parameters()]


def check_data(x: torch.Tensor, y: torch.Tensor, names=("x", "y")) -> None:
    """Refuse a sample whose inputs and labels differ in number, or that is empty."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{names[0]} and {names[1]} must hold the same, non-zero number of examples; got {len(x)} "
                         f"and {len(y)}")


def check_vector(model: nn.Module, v: Params, *, name: str = "v") -> None:
    """Raise ``ValueError`` unless ``v`` has exactly the trainable parameters' names and shapes."""
    shapes = {n: p.shape for n, p in model.named_parameters()}
    if not isinstance(v, dict) or v.keys() != shapes.keys():
        keys = set(v) if isinstance(v, dict) else set()
        raise ValueError(
            f"{name} must be a dict over the trainable parameters "
            f"{list(shapes)[:5]}{'...' if len(shapes) > 5 else ''}; "
            f"missing {sorted(set(shapes) - keys)[:5]}, unexpected {sorted(keys - set(shapes))[:5]}"
            + ("" if isinstance(v, dict) else f" (got a {type(v).__name__})")
        )
    for key, shape in shapes.items():
        if not isinstance(v[key], torch.Tensor) or v[key].shape != shape:
            got = f"shape {tuple(v[key].shape)}" if isinstance(v[key], torch.Tensor) else f"type {type(v[key]).__name__}"
            raise ValueError(f"{name}[{key!r}] has {got}; parameter {key!r} is a tensor of shape {tuple(shape)}")


def activation_bytes(model: nn.Module, params: Params, x: torch.Tensor) -> int:
    """Bytes of the input and of every leaf module's output for *one* example: our memory estimate's unit.

    Measured by one forward pass of ``x[:1]`` at ``params`` (so in their dtype), in eval mode,
    without gradients.
    """
    total = [x[:1].numel() * x.element_size()]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with evaluation(model), torch.no_grad():
            functional_call(model, params, (x[:1],))
    finally:
        for handle in handles:
            handle.remove()
    return int(total[0])


def gibibytes(n: float) -> str:
    """A number of bytes as GiB, for the memory messages of this module and :mod:`sgdlab.gauss_newton`."""
    return f"{n / 2**30:.3g} GiB"


@contextlib.contextmanager
def batchnorm_mode(model: nn.Module, bn: str):
    """Eval mode (``bn="eval"``), or train mode with BatchNorm normalising by batch statistics and
    updating no running statistic (``bn="batch"``), as torch.func transforms need: restored on exit."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = [m.track_running_stats for m in norms]
    with evaluation(model, bn):
        if bn == "batch":
            for m in norms:  # batch statistics, and no in-place update of captured buffers under torch.func
                m.track_running_stats = False
        try:
            yield
        finally:
            for m, t in zip(norms, tracking):
                m.track_running_stats = t


class LossOnSet:
    """The mean cross-entropy over ``(x, y)`` as a function of the trainable parameters.

    Holds the split of ``params`` into variables (trainable) and constants (buffers) and the
    chunks; :meth:`gradient` and :meth:`hvp` sum over chunks, weighted by size / N.
    ``reserved_bytes`` is memory the caller keeps meanwhile (a Lanczos basis, stored
    gradients), counted against ``memory_budget`` before the chunks are sized.
    ``graphs_fit`` says whether the graphs of all chunks fit the budget together, which lets
    :meth:`hvp_operator` keep them between products.
    """

    def __init__(self, model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, *,
                 chunk_size: int | None = None, bn: str = "eval", memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 reserved_bytes: int = 0):
        check_fits_model(model, params)
        check_data(x, y)
        if bn not in BN_MODES:
            raise ValueError(f"bn={bn!r} is not known; choose one of: {', '.join(BN_MODES)}")
        self.model, self.x, self.y, self.bn = model, x, y, bn
        self.names = trainable_names(model)
        self.variables = {n: params[n] for n in self.names}
        self.constants = {n: t for n, t in params.items() if n not in self.variables}
        self.dim = sum(t.numel() for t in self.variables.values())
        per_example = GRAPH_FACTOR * activation_bytes(model, params, x)
        # params, gradient, tangent, result; and what the caller keeps meanwhile (a Lanczos basis, gradients)
        fixed = 4 * sum(t.numel() * t.element_size() for t in self.variables.values()) + reserved_bytes
        automatic = chunk_size is None
        if automatic:
            chunk_size = max(1, min(MAX_CHUNK_SIZE, len(x), int((memory_budget - fixed) // per_example)))
        else:
            chunk_size = check_int("chunk_size", chunk_size, 1)
        need = fixed + per_example * min(chunk_size, len(x))
        if need > memory_budget:
            request = "even one example per chunk" if automatic else f"chunk_size={chunk_size}"
            raise ValueError(
                f"{request} would need about {gibibytes(need)} (estimated: {GRAPH_FACTOR} x "
                f"{per_example // GRAPH_FACTOR:,} "
                f"bytes of activations per example, plus parameter-sized vectors"
                + (f" and {reserved_bytes:,} bytes kept by the caller" if reserved_bytes else "")
                + f"), more than the budget "
                f"memory_budget={memory_budget:,} bytes ({gibibytes(memory_budget)}): "
                + ("raise memory_budget" if automatic else "use a smaller chunk_size or chunk_size=None (automatic), "
                                                           "or raise memory_budget")
            )
        self.chunk_size = chunk_size
        self.chunks = [(start, min(start + chunk_size, len(x))) for start in range(0, len(x), chunk_size)]
        self.graphs_fit = fixed + per_example * len(x) <= memory_budget

    def loss_fn(self, index: int) -> Callable[[Params], torch.Tensor]:
        """The mean loss over chunk ``index`` as a function of the variables."""
        start, stop = self.chunks[index]
        xc, yc = self.x[start:stop], self.y[start:stop]

        def loss(variables: Params) -> torch.Tensor:
            logits = functional_call(self.model, {**variables, **self.constants}, (xc,))
            return F.cross_entropy(logits, yc)

        return loss

    def sum_over_chunks(self, part_of_chunk: Callable[[int], Params]) -> Params:
        """sum over chunks of (chunk size / N) * part_of_chunk(chunk index)."""
        total = {n: torch.zeros_like(t) for n, t in self.variables.items()}
        with batchnorm_mode(self.model, self.bn):
            for index, (start, stop) in enumerate(self.chunks):
                part = part_of_chunk(index)
                weight = (stop - start) / len(self.x)
                for n in self.names:
                    total[n] += weight * part[n].detach()
        return total

    def as_tangent(self, v: Params) -> Params:
        """``v`` restricted to the trainable names, on the variables' device and dtype."""
        return {n: v[n].to(self.variables[n]) for n in self.names}

    def leaves(self) -> Params:
        """Fresh copies of the variables that autograd differentiates with respect to."""
        return {n: t.detach().requires_grad_() for n, t in self.variables.items()}

    def grad(self, outputs, leaves: Params, **options) -> Params:
        """``torch.autograd.grad`` of ``outputs`` with respect to ``leaves``, as a dict; zeros where unused."""
        parts = torch.autograd.grad(outputs, list(leaves.values()), allow_unused=True, materialize_grads=True, **options)
        return dict(zip(leaves, parts))

    def gradient(self) -> Params:
        """The gradient of the mean loss (a dict over the trainable names)."""
        def part(i):
            leaves = self.leaves()
            return self.grad(self.loss_fn(i)(leaves), leaves)

        return self.sum_over_chunks(part)

    def hvp(self, v: Params, mode: str = "reverse-over-reverse") -> Params:
        """H v, with H the Hessian of the mean loss, by ``mode`` (see the module docstring); keeps nothing."""
        if mode not in HVP_MODES:
            raise ValueError(f"mode={mode!r} is not known; choose one of: {', '.join(HVP_MODES)}")
        v = self.as_tangent(v)
        if mode == "forward-over-reverse":
            return self.sum_over_chunks(lambda i: jvp(grad(self.loss_fn(i)), (self.variables,), (v,))[1])
        return self.sum_over_chunks(lambda i: self._second_backward(*self._gradient_graph(i), v, keep=False))

    def _gradient_graph(self, index: int) -> tuple[Params, Params]:
        """``(leaves, g)``: chunk ``index``'s gradient ``g`` with its graph, for a second backward pass."""
        leaves = self.leaves()
        return leaves, self.grad(self.loss_fn(index)(leaves), leaves, create_graph=True)

    def _second_backward(self, leaves: Params, g: Params, v: Params, *, keep: bool) -> Params:
        """``d<g(w), v>/dw = H v`` through the graph of ``g``; ``keep`` keeps the graph for more products."""
        used = [n for n in self.names if g[n].requires_grad]  # a gradient that is constant has no graph
        if not used:
            return {n: torch.zeros_like(v[n]) for n in self.names}
        return self.grad([g[n] for n in used], leaves, grad_outputs=[v[n] for n in used], retain_graph=keep)

    def hvp_operator(self) -> Callable[[Params], Params]:
        """A function ``v -> H v`` for many products at these parameters (Lanczos, alignment).

        When ``graphs_fit``, it builds each chunk's gradient graph once and keeps them: every
        product is then one reverse pass through them (reverse-over-reverse, as :meth:`hvp`),
        instead of recomputing the forward and backward passes for each product. The graphs
        are freed with the returned function. Otherwise it is :meth:`hvp`.
        """
        if not self.graphs_fit:
            return self.hvp
        with batchnorm_mode(self.model, self.bn):
            graphs = [self._gradient_graph(i) for i in range(len(self.chunks))]

        def product(v: Params) -> Params:
            v = self.as_tangent(v)
            return self.sum_over_chunks(lambda i: self._second_backward(*graphs[i], v, keep=True))

        return product

    def flatten(self, v: Params) -> torch.Tensor:
        """``v`` (one tensor per trainable parameter) as one vector, in ``names`` order."""
        return flatten({n: v[n] for n in self.names})

    def unflatten(self, vector: torch.Tensor) -> Params:
        """The inverse of :meth:`flatten`: views of ``vector`` shaped like the trainable parameters."""
        return unflatten(vector, self.variables)


def gradient(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, *, chunk_size: int | None = None,
             bn: str = "eval", memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Params:
    """Gradient of the mean cross-entropy over ``(x, y)`` at ``params``, over the trainable parameters.

    A dict like ``dict(model.named_parameters())``; conventions in the module docstring.
    """
    return LossOnSet(model, params, x, y, chunk_size=chunk_size, bn=bn, memory_budget=memory_budget).gradient()


def hvp(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, v: Params, *, chunk_size: int | None = None,
        bn: str = "eval", memory_budget: int = DEFAULT_MEMORY_BUDGET, mode: str = "reverse-over-reverse") -> Params:
    """Exact Hessian-vector product ``H v``, H the Hessian of the mean cross-entropy over ``(x, y)`` at ``params``.

    ``params`` covers the model's state (parameters and buffers); only the trainable
    parameters are variables, and ``v`` must be a dict over exactly those names and shapes
    (its tensors are cast to the parameters' dtype and device). ``mode``:
    ``"reverse-over-reverse"`` (default; a second backward pass through the gradient's graph)
    or ``"forward-over-reverse"`` (``torch.func.jvp`` of ``grad``); both exact (see the module
    docstring). Chunk by chunk (``chunk_size`` examples, ``None``: automatic within
    ``memory_budget`` bytes), each chunk weighted by its size / N. ``bn="eval"``: BatchNorm
    uses the running statistics. Returns a dict like ``v`` (nats per squared parameter unit
    times the units of ``v``), in the parameters' dtype. Nothing is kept between calls; for
    many products at one point see :meth:`LossOnSet.hvp_operator`.
    """
    check_vector(model, v)
    return LossOnSet(model, params, x, y, chunk_size=chunk_size, bn=bn, memory_budget=memory_budget).hvp(v, mode)


def check_lanczos_request(model: nn.Module, params: Params, k: int, max_iter: int,
                          memory_budget: int) -> tuple[int, int, int]:
    """Check a request for the ``k`` top eigenvalues of a curvature matrix over the trainable
    parameters by Lanczos (:func:`top_eigenvalues`, :func:`sgdlab.gauss_newton.gauss_newton_top_eigenvalues`);
    return ``(k, dim, basis_bytes)``: the number of eigenvalues, of trainable parameters, and the
    bytes the Lanczos basis of up to ``max_iter`` vectors takes, which must fit ``memory_budget``."""
    check_fits_model(model, params)
    k = check_int("k", k, 1)
    max_iter = check_int("max_iter", max_iter, 1)
    names = trainable_names(model)
    dim = sum(params[n].numel() for n in names)
    if k > dim:
        raise ValueError(f"k must be an int in 1..{dim} (the number of trainable parameters), got k={k}")
    basis_bytes = min(max_iter, dim) * dim * params[names[0]].element_size()
    if basis_bytes > memory_budget:
        raise ValueError(f"max_iter={max_iter} Lanczos vectors of {dim:,} parameters would need "
                         f"{gibibytes(basis_bytes)}, "
                         f"more than the budget memory_budget={memory_budget:,} bytes ({gibibytes(memory_budget)}): "
                         f"lower max_iter")
    return k, dim, basis_bytes


def top_eigenvalues(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, k: int = 1, *,
                    tol: float = 1e-3, max_iter: int = 100, seed: int = 0, return_vectors: bool = False,
                    chunk_size: int | None = None, bn: str = "eval", memory_budget: int = DEFAULT_MEMORY_BUDGET):
    """The ``k`` largest eigenvalues of the Hessian of the mean cross-entropy over ``(x, y)`` at ``params``.

    By Lanczos with full reorthogonalisation on exact Hessian-vector products (see
    :func:`sgdlab.lanczos.lanczos` for ``tol``, ``max_iter`` and ``seed``, and :func:`hvp` for the other
    options); when the graphs of all chunks fit ``memory_budget`` they are built once and
    kept for all products (:meth:`LossOnSet.hvp_operator`). Returns a float64 CPU tensor of
    ``k`` eigenvalues, largest first, in nats per squared parameter unit, each within
    ``tol`` times the largest of them of an eigenvalue of H; with ``return_vectors=True``,
    ``(values, vectors)`` where ``vectors`` is a list of ``k`` unit-norm dicts over the
    trainable parameters. The Lanczos basis (up to ``max_iter`` parameter-sized vectors)
    counts against ``memory_budget``.
    """
    k, dim, basis_bytes = check_lanczos_request(model, params, k, max_iter, memory_budget)
    names = trainable_names(model)
    loss = LossOnSet(model, params, x, y, chunk_size=chunk_size, bn=bn, memory_budget=memory_budget,
                     reserved_bytes=basis_bytes)
    product = loss.hvp_operator()
    result = lanczos(lambda q: loss.flatten(product(loss.unflatten(q))), dim, k, tol=tol, max_iter=max_iter,
                     seed=seed, device=x.device, dtype=params[names[0]].dtype)
    values = result.values.cpu()
    if return_vectors:
        return values, [loss.unflatten(v) for v in result.vectors]
    return values


def alignment(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, batch_size: int, n_batches: int, *,
              seed: int = 0, hessian_x: torch.Tensor | None = None, hessian_y: torch.Tensor | None = None,
              chunk_size: int | None = None, bn: str = "eval", memory_budget: int = DEFAULT_MEMORY_BUDGET) -> torch.Tensor:
    """Alignment of mini-batch gradients with the Hessian: ``g_B^T H g_B / ||g_B||^2`` ("A Walk with SGD", eq. 4).

    Draws ``n_batches`` mini-batches of ``batch_size`` examples from ``(x, y)``, each
    without replacement (independently of one another: batch b is the first ``batch_size``
    entries of the b-th ``torch.randperm`` of a CPU generator seeded with ``seed``); ``g_B``
    is the gradient of the batch's mean loss and ``H`` the Hessian of the mean loss over
    ``(x, y)``, or over the fixed sample ``(hessian_x, hessian_y)`` when given (for large
    sets; say which in the text). Both use BatchNorm as ``bn`` says (default eval mode, so
    ``g_B`` is not quite the gradient a train-mode SGD step uses). The batch gradients are
    computed first and kept (they count against ``memory_budget``), then multiplied by H
    (see :meth:`LossOnSet.hvp_operator`).
    Returns a float64 CPU tensor of ``n_batches`` values, in drawing order (nats per squared
    parameter unit: a curvature, comparable with the top eigenvalue; show their mean and
    spread). With ``batch_size = len(x)`` every batch is the whole set: computed once,
    repeated ``n_batches`` times.
    """
    check_data(x, y)
    n = len(x)
    batch_size = check_int("batch_size", batch_size, 1, n)
    n_batches = check_int("n_batches", n_batches, 1)
    if (hessian_x is None) != (hessian_y is None):
        raise ValueError("give both hessian_x and hessian_y, or neither (then the Hessian is over x, y)")
    if hessian_x is None:
        hessian_x, hessian_y = x, y
    check_data(hessian_x, hessian_y, names=("hessian_x", "hessian_y"))
    check_fits_model(model, params)
    distinct = 1 if batch_size == n else n_batches
    stored_bytes = distinct * sum(params[name].numel() * params[name].element_size() for name in trainable_names(model))
    options = dict(chunk_size=chunk_size, bn=bn, memory_budget=memory_budget, reserved_bytes=stored_bytes)
    hessian = LossOnSet(model, params, hessian_x, hessian_y, **options)
    generator = torch.Generator().manual_seed(seed)
    gradients = []
    for _ in range(distinct):
        index = torch.randperm(n, generator=generator)[:batch_size].to(x.device)
        gradients.append(LossOnSet(model, params, x[index], y[index], **options).gradient())
    product = hessian.hvp_operator()
    values = []
    for g in gradients:
        g_flat, hg_flat = hessian.flatten(g).double(), hessian.flatten(product(g)).double()
        squared = float(g_flat @ g_flat)
        values.append(float(g_flat @ hg_flat) / squared if squared > 0 else math.nan)
    return torch.tensor(values * (n_batches // distinct), dtype=torch.float64)

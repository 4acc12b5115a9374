"""Curvature of the loss surface: Hessian-vector products, top eigenvalues, gradient-Hessian
alignment, the cosine of consecutive mini-batch gradients, and the Gauss-Newton parts.

Section 4 of "A Walk with SGD" (Xing, Arpit, Tsirigotis, Bengio 2018) explains why large
batches explore less: their gradients line up with the sharp directions of the Hessian
(alignment, the paper's eq. 4), so SGD oscillates (consecutive gradients point apart, eq. 5).
The relation behind it is the decomposition of the Hessian of the negative log-likelihood
(eq. 2, derived in their appendix B): H = C + g g^T + (a second-order term).

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
  ``v`` forward through the gradient computation (``torch.func.jvp`` of ``grad``). Measured on
  the CPU by ``bench/curvature.py``, in gradients: 1.9 and 3.1 on the MLP, 3.0 and 2.6 on the
  small CNN (PyTorch's second derivatives of convolutions are dear). The first is the default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

from .params import BN_MODES, Params, check_fits_model, model_params
from .callbacks import Callback

DEFAULT_MEMORY_BUDGET = 2 * 2**30   # bytes a single request may use, by our estimate
MAX_CHUNK_SIZE = 4096               # the automatic chunk size never exceeds this
GRAPH_FACTOR = 4                    # graph bytes per byte of activations: activations, tangents, both backward passes
HVP_MODES = ("reverse-over-reverse", "forward-over-reverse")


def trainable_names(model: nn.Module) -> list[str]:
    """The names of the variables of every Hessian here: ``model.named_parameters()``, in order."""
    return [name for name, _ in model.named_parameters()]


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high is not None and value > high):
        allowed = f"an int in {low}..{high}" if high is not None else f"an int >= {low}"
        raise ValueError(f"{name} must be {allowed}, got {name}={value!r}")
    return int(value)


def _check_data(x: torch.Tensor, y: torch.Tensor, names=("x", "y")) -> None:
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{names[0]} and {names[1]} must hold the same, non-zero number of examples; got {len(x)} and {len(y)}")


def check_vector(model: nn.Module, v: Params, *, name: str = "v") -> None:
    """Raise ``ValueError`` unless ``v`` has exactly the trainable parameters' names and shapes."""
    shapes = {n: p.shape for n, p in model.named_parameters()}
    if not isinstance(v, dict) or v.keys() != shapes.keys():
        keys = set(v) if isinstance(v, dict) else set()
        raise ValueError(
            f"{name} must be a dict over the trainable parameters {list(shapes)[:5]}{'...' if len(shapes) > 5 else ''}; "
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
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            functional_call(model, params, (x[:1],))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return int(total[0])


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


@contextlib.contextmanager
def _bn_mode(model: nn.Module, bn: str):
    """Eval mode, or train mode with BatchNorm using batch statistics and tracking nothing."""
    if bn not in BN_MODES:
        raise ValueError(f"bn={bn!r} is not known; choose one of: {', '.join(BN_MODES)}")
    was_training = model.training
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = [m.track_running_stats for m in norms]
    model.train(bn == "batch")
    if bn == "batch":
        for m in norms:  # batch statistics, and no in-place update of captured buffers under torch.func
            m.track_running_stats = False
    try:
        yield
    finally:
        for m, t in zip(norms, tracking):
            m.track_running_stats = t
        model.train(was_training)


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
        _check_data(x, y)
        if bn not in BN_MODES:
            raise ValueError(f"bn={bn!r} is not known; choose one of: {', '.join(BN_MODES)}")
        self.model, self.x, self.y, self.bn = model, x, y, bn
        self.names = trainable_names(model)
        self.variables = {n: params[n] for n in self.names}
        self.constants = {n: t for n, t in params.items() if n not in self.variables}
        self.shapes = [self.variables[n].shape for n in self.names]
        self.dim = sum(t.numel() for t in self.variables.values())
        per_example = GRAPH_FACTOR * activation_bytes(model, params, x)
        # params, gradient, tangent, result; and what the caller keeps meanwhile (a Lanczos basis, gradients)
        fixed = 4 * sum(t.numel() * t.element_size() for t in self.variables.values()) + reserved_bytes
        automatic = chunk_size is None
        if automatic:
            chunk_size = max(1, min(MAX_CHUNK_SIZE, len(x), int((memory_budget - fixed) // per_example)))
        else:
            chunk_size = _check_int("chunk_size", chunk_size, 1)
        need = fixed + per_example * min(chunk_size, len(x))
        if need > memory_budget:
            request = "even one example per chunk" if automatic else f"chunk_size={chunk_size}"
            raise ValueError(
                f"{request} would need about {_gib(need)} (estimated: {GRAPH_FACTOR} x {per_example // GRAPH_FACTOR:,} "
                f"bytes of activations per example, plus parameter-sized vectors"
                + (f" and {reserved_bytes:,} bytes kept by the caller" if reserved_bytes else "")
                + f"), more than the budget "
                f"memory_budget={memory_budget:,} bytes ({_gib(memory_budget)}): "
                + ("raise memory_budget" if automatic else "use a smaller chunk_size or chunk_size=None (automatic), or raise memory_budget")
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

    def _sum(self, part_of_chunk: Callable[[int], Params]) -> Params:
        """sum over chunks of (chunk size / N) * part_of_chunk(chunk index)."""
        total = {n: torch.zeros_like(t) for n, t in self.variables.items()}
        with _bn_mode(self.model, self.bn):
            for index, (start, stop) in enumerate(self.chunks):
                part = part_of_chunk(index)
                weight = (stop - start) / len(self.x)
                for n in self.names:
                    total[n] += weight * part[n].detach()
        return total

    def _as_tangent(self, v: Params) -> Params:
        return {n: v[n].to(self.variables[n]) for n in self.names}

    def _leaves(self) -> Params:
        """Fresh copies of the variables that autograd differentiates with respect to."""
        return {n: t.detach().requires_grad_() for n, t in self.variables.items()}

    def _grad(self, outputs, leaves: Params, **options) -> Params:
        """``torch.autograd.grad`` of ``outputs`` with respect to ``leaves``, as a dict; zeros where unused."""
        parts = torch.autograd.grad(outputs, list(leaves.values()), allow_unused=True, materialize_grads=True, **options)
        return dict(zip(leaves, parts))

    def gradient(self) -> Params:
        """The gradient of the mean loss (a dict over the trainable names)."""
        def part(i):
            leaves = self._leaves()
            return self._grad(self.loss_fn(i)(leaves), leaves)

        return self._sum(part)

    def hvp(self, v: Params, mode: str = "reverse-over-reverse") -> Params:
        """H v, with H the Hessian of the mean loss, by ``mode`` (see the module docstring); keeps nothing."""
        if mode not in HVP_MODES:
            raise ValueError(f"mode={mode!r} is not known; choose one of: {', '.join(HVP_MODES)}")
        v = self._as_tangent(v)
        if mode == "forward-over-reverse":
            return self._sum(lambda i: jvp(grad(self.loss_fn(i)), (self.variables,), (v,))[1])
        return self._sum(lambda i: self._second_backward(*self._gradient_graph(i), v, keep=False))

    def _gradient_graph(self, index: int) -> tuple[Params, Params]:
        """``(leaves, g)``: chunk ``index``'s gradient ``g`` with its graph, for a second backward pass."""
        leaves = self._leaves()
        return leaves, self._grad(self.loss_fn(index)(leaves), leaves, create_graph=True)

    def _second_backward(self, leaves: Params, g: Params, v: Params, *, keep: bool) -> Params:
        """``d<g(w), v>/dw = H v`` through the graph of ``g``; ``keep`` keeps the graph for more products."""
        used = [n for n in self.names if g[n].requires_grad]  # a gradient that is constant has no graph
        if not used:
            return {n: torch.zeros_like(v[n]) for n in self.names}
        return self._grad([g[n] for n in used], leaves, grad_outputs=[v[n] for n in used], retain_graph=keep)

    def hvp_operator(self) -> Callable[[Params], Params]:
        """A function ``v -> H v`` for many products at these parameters (Lanczos, alignment).

        When ``graphs_fit``, it builds each chunk's gradient graph once and keeps them: every
        product is then one reverse pass through them (reverse-over-reverse, as :meth:`hvp`),
        instead of recomputing the forward and backward passes for each product. The graphs
        are freed with the returned function. Otherwise it is :meth:`hvp`.
        """
        if not self.graphs_fit:
            return self.hvp
        with _bn_mode(self.model, self.bn):
            graphs = [self._gradient_graph(i) for i in range(len(self.chunks))]

        def product(v: Params) -> Params:
            v = self._as_tangent(v)
            return self._sum(lambda i: self._second_backward(*graphs[i], v, keep=True))

        return product

    def flatten(self, v: Params) -> torch.Tensor:
        return torch.cat([v[n].reshape(-1) for n in self.names])

    def unflatten(self, vector: torch.Tensor) -> Params:
        pieces = torch.split(vector, [math.prod(s) for s in self.shapes])
        return {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes)}


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
    or ``"forward-over-reverse"`` (``torch.func.jvp`` of ``grad``); both exact, their costs
    in the module docstring. Chunk by chunk (``chunk_size`` examples, ``None``: automatic within
    ``memory_budget`` bytes), each chunk weighted by its size / N. ``bn="eval"``: BatchNorm
    uses the running statistics. Returns a dict like ``v`` (nats per squared parameter unit
    times the units of ``v``), in the parameters' dtype. Nothing is kept between calls; for
    many products at one point see :meth:`LossOnSet.hvp_operator`.
    """
    check_vector(model, v)
    return LossOnSet(model, params, x, y, chunk_size=chunk_size, bn=bn, memory_budget=memory_budget).hvp(v, mode)


@dataclasses.dataclass
class LanczosResult:
    """The ``k`` largest Ritz values (descending, float64) and vectors (rows of ``vectors``, unit norm)."""

    values: torch.Tensor
    vectors: torch.Tensor
    iterations: int      # matrix-vector products used
    converged: bool


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, k: int = 1, *, tol: float = 1e-3,
            max_iter: int = 100, seed: int = 0, device=None, dtype=torch.float32) -> LanczosResult:
    """The ``k`` largest (algebraic) eigenvalues of a symmetric operator A, by Lanczos with full reorthogonalisation.

    ``matvec`` maps a vector of length ``dim`` to its product with A. Starts from a normal
    random vector drawn with ``seed``. After m products, each Ritz pair (theta, u) of the
    Krylov space has the residual ``||A u - theta u|| = beta_m |s_m|`` (the next off-diagonal
    entry times the last entry of its eigenvector in the tridiagonal matrix), known without
    another product. Lanczos stops once each of the top ``k`` residuals is at most
    ``tol * max |theta|``: then, A being symmetric, an eigenvalue of A lies within that
    distance of each returned value, so ``tol`` bounds the error relative to the spectrum's
    scale. It also stops when the space reaches ``dim``, or after ``max_iter`` products (with a
    ``RuntimeWarning``). If the space becomes invariant before it holds ``k`` values, it
    continues from a new random direction orthogonal to it. The tridiagonal matrix is float64.
    """
    k = _check_int("k", k, 1, dim)
    max_iter = _check_int("max_iter", max_iter, 1)
    if not tol > 0:
        raise ValueError(f"tol must be positive, got tol={tol!r}")
    max_iter = min(max_iter, dim)
    generator = torch.Generator().manual_seed(seed)
    basis = torch.empty(max_iter, dim, device=device, dtype=dtype)
    tridiagonal = torch.zeros(max_iter, max_iter, dtype=torch.float64)

    def orthogonal_to_basis(w: torch.Tensor, size: int) -> torch.Tensor:
        for _ in range(2):  # full reorthogonalisation, done twice ("twice is enough", Parlett)
            w = w - basis[:size].T @ (basis[:size] @ w)
        return w

    def random_direction(size: int) -> torch.Tensor:
        w = torch.randn(dim, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
        return orthogonal_to_basis(w, size)

    w, converged = random_direction(0), False
    for j in range(max_iter):
        basis[j] = w / w.norm()
        w = matvec(basis[j])
        tridiagonal[j, j] = float(w.double() @ basis[j].double())
        w = orthogonal_to_basis(w, j + 1)
        beta = float(w.norm())
        ritz, ritz_vectors = torch.linalg.eigh(tridiagonal[:j + 1, :j + 1])  # ascending
        residuals = beta * ritz_vectors[-1].abs()
        scale = float(ritz.abs().max())
        converged = j + 1 == dim or (j + 1 >= k and bool((residuals[-k:] <= tol * scale).all()))
        if converged or j + 1 == max_iter:
            break
        if beta <= 1e-10 * scale:  # an invariant subspace with fewer than k values: look elsewhere
            w = random_direction(j + 1)
        else:
            tridiagonal[j, j + 1] = tridiagonal[j + 1, j] = beta
    m = j + 1
    order = torch.argsort(ritz, descending=True)[:k]
    vectors = ritz_vectors[:, order].T.to(device=device, dtype=dtype) @ basis[:m]
    if not converged:
        warnings.warn(f"Lanczos did not converge to tol={tol:g} in max_iter={max_iter} products; the top Ritz values "
                      f"are {ritz[order].tolist()} with residuals {residuals[order].tolist()}", RuntimeWarning, stacklevel=2)
    return LanczosResult(ritz[order].clone(), vectors, m, converged)


def top_eigenvalues(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, k: int = 1, *,
                    tol: float = 1e-3, max_iter: int = 100, seed: int = 0, return_vectors: bool = False,
                    chunk_size: int | None = None, bn: str = "eval", memory_budget: int = DEFAULT_MEMORY_BUDGET):
    """The ``k`` largest eigenvalues of the Hessian of the mean cross-entropy over ``(x, y)`` at ``params``.

    By Lanczos with full reorthogonalisation on exact Hessian-vector products (see
    :func:`lanczos` for ``tol``, ``max_iter`` and ``seed``, and :func:`hvp` for the other
    options); when the graphs of all chunks fit ``memory_budget`` they are built once and
    kept for all products (:meth:`LossOnSet.hvp_operator`). Returns a float64 CPU tensor of
    ``k`` eigenvalues, largest first, in nats per squared parameter unit, each within
    ``tol`` times the largest of them of an eigenvalue of H; with ``return_vectors=True``,
    ``(values, vectors)`` where ``vectors`` is a list of ``k`` unit-norm dicts over the
    trainable parameters. The Lanczos basis (up to ``max_iter`` parameter-sized vectors)
    counts against ``memory_budget``.
    """
    check_fits_model(model, params)
    k = _check_int("k", k, 1)
    max_iter = _check_int("max_iter", max_iter, 1)
    names = trainable_names(model)
    dim = sum(params[n].numel() for n in names)
    if k > dim:
        raise ValueError(f"k must be an int in 1..{dim} (the number of trainable parameters), got k={k}")
    basis_bytes = min(max_iter, dim) * dim * params[names[0]].element_size()
    if basis_bytes > memory_budget:
        raise ValueError(f"max_iter={max_iter} Lanczos vectors of {dim:,} parameters would need {_gib(basis_bytes)}, "
                         f"more than the budget memory_budget={memory_budget:,} bytes ({_gib(memory_budget)}): lower max_iter")
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
    _check_data(x, y)
    n = len(x)
    batch_size = _check_int("batch_size", batch_size, 1, n)
    n_batches = _check_int("n_batches", n_batches, 1)
    if (hessian_x is None) != (hessian_y is None):
        raise ValueError("give both hessian_x and hessian_y, or neither (then the Hessian is over x, y)")
    if hessian_x is None:
        hessian_x, hessian_y = x, y
    _check_data(hessian_x, hessian_y, names=("hessian_x", "hessian_y"))
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


class GradientCosineRecorder(Callback):
    """Cosine between consecutive mini-batch gradients at every step ("A Walk with SGD", eq. 5).

    ``cos(g_{t-1}, g_t) = g_{t-1}^T g_t / (||g_{t-1}|| ||g_t||)`` with ``g_t`` the gradient of
    step t's mini-batch loss, as the training step computed it (``Step.grads``: train-mode
    BatchNorm, no weight decay), over all parameters with a gradient, in float64. Keeps only
    the previous gradient, flattened. ``steps`` holds t (>= 1, global step indices) and
    ``cosines`` the values (NaN where a gradient is zero). Records one run; a resumed run
    continues where its checkpoint left off.
    """

    def __init__(self):
        self._previous: torch.Tensor | None = None
        self._steps: list[int] = []
        self._cosines: list[float] = []

    def on_train_begin(self, model, dataset):
        self._previous, self._steps, self._cosines = None, [], []

    def on_step(self, step):
        g = torch.cat([t.reshape(-1) for t in step.grads.values()]).double()
        if self._previous is not None and len(self._previous) == len(g):  # else the parameters with a gradient changed
            denominator = float(self._previous.norm() * g.norm())
            self._steps.append(step.index)
            self._cosines.append(float(self._previous @ g) / denominator if denominator > 0 else math.nan)
        self._previous = g  # a new tensor (torch.cat), not the live gradients

    def on_train_end(self, history):
        self._previous = None

    def state_dict(self) -> dict:
        return {"previous": self._previous, "steps": list(self._steps), "cosines": list(self._cosines)}

    def load_state_dict(self, state: dict) -> None:
        self._previous, self._steps, self._cosines = state["previous"], list(state["steps"]), list(state["cosines"])

    @property
    def steps(self) -> np.ndarray:
        return np.asarray(self._steps, dtype=np.int64)

    @property
    def cosines(self) -> np.ndarray:
        return np.asarray(self._cosines, dtype=np.float64)


class TopEigenvalueRecorder(Callback):
    """The top Hessian eigenvalue (sharpness) every ``every`` steps of training, and before the first.

    The Hessian is of the mean loss over ``(x, y)`` (default: the whole training set, no
    augmentation) with BatchNorm in eval mode; ``options`` go to :func:`top_eigenvalues`.
    ``iterations`` holds the number of updates done when each value was measured (0: at
    initialisation) and ``values`` the eigenvalues (nats per squared parameter unit).
    Records one run; a resumed run continues where its checkpoint left off.
    """

    def __init__(self, every: int = 100, *, x: torch.Tensor | None = None, y: torch.Tensor | None = None, **options):
        self.every = _check_int("every", every, 1)
        self.x, self.y, self.options = x, y, options
        self._iterations: list[int] = []
        self._values: list[float] = []

    def _measure(self, model, iterations):
        values = top_eigenvalues(model, model_params(model), self._x, self._y, 1, **self.options)
        self._iterations.append(iterations)
        self._values.append(float(values[0]))

    def on_train_begin(self, model, dataset):
        self._x = self.x if self.x is not None else dataset.x_train
        self._y = self.y if self.y is not None else dataset.y_train
        self._iterations, self._values = [], []
        self._measure(model, 0)

    def on_step(self, step):
        if (step.index + 1) % self.every == 0:
            self._measure(step.model, step.index + 1)

    def state_dict(self) -> dict:
        return {"iterations": list(self._iterations), "values": list(self._values)}

    def load_state_dict(self, state: dict) -> None:
        self._iterations, self._values = list(state["iterations"]), list(state["values"])

    @property
    def iterations(self) -> np.ndarray:
        return np.asarray(self._iterations, dtype=np.int64)

    @property
    def values(self) -> np.ndarray:
        return np.asarray(self._values, dtype=np.float64)


@dataclasses.dataclass
class GaussNewtonParts:
    """The parts of the Hessian of the mean negative log-likelihood ("A Walk with SGD", eq. 2), dense, float64.

    ``hessian`` (H, by ``torch.func.hessian``) = ``covariance`` (C = (1/N) sum_i grad L_i grad L_i^T
    - g g^T) + ``outer`` (g g^T) + ``second_order`` ((1/N) sum_i (dL_i/dp_i) d^2 p_i / d theta^2
    = -(1/N) sum_i (1/p_i) d^2 p_i / d theta^2), with p_i the predicted probability of the
    correct class, L_i = -log p_i, g the mean gradient. Matrices are P x P over the
    flattened trainable parameters (order of ``model.named_parameters()``).
    """

    hessian: torch.Tensor
    covariance: torch.Tensor
    outer: torch.Tensor
    second_order: torch.Tensor
    gradient: torch.Tensor
    n_examples: int

    @property
    def max_error(self) -> float:
        """``max |C + g g^T + second-order - H| / max |H|``: how well eq. 2 holds numerically."""
        residual = self.covariance + self.outer + self.second_order - self.hessian
        return float(residual.abs().max() / self.hessian.abs().max())

    def norms(self) -> dict:
        """Frobenius norm of each part (nats per squared parameter unit)."""
        return {name: float(getattr(self, name).norm()) for name in ("hessian", "covariance", "outer", "second_order")}


def gauss_newton_parts(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, *,
                       memory_budget: int = DEFAULT_MEMORY_BUDGET) -> GaussNewtonParts:
    """The three parts of eq. 2 and the Hessian itself, as dense float64 matrices, for a tiny network.

    Everything is computed in float64 (parameters, buffers and ``x`` are converted), over
    the whole sample ``(x, y)``, in chunks of examples sized to ``memory_budget`` bytes; a
    network whose P x P matrices do not fit the budget raises ``ValueError``. BatchNorm, if
    any, runs in eval mode: eq. 2 needs a loss that is a mean of per-example losses. The
    second-order term is computed on its own, as the Hessian of the surrogate
    -(1/N) sum_i p_i(theta) / p_i(theta_0) at theta_0, never as a difference.
    """
    _check_data(x, y)
    check_fits_model(model, params)
    names = trainable_names(model)
    params64 = {k: t.double() if t.is_floating_point() else t for k, t in params.items()}
    x64 = x.double()
    constants = {k: t for k, t in params64.items() if k not in names}
    shapes = [params64[n].shape for n in names]
    theta = torch.cat([params64[n].reshape(-1) for n in names])
    dim, n = len(theta), len(x)
    fixed = 6 * dim * dim * 8                         # H, C, g g^T, second order, one chunk's Hessian, a sum
    per_example = 3 * dim * activation_bytes(model, params64, x64) + dim * 8  # hessian's P tangents of the graph
    if fixed + per_example > memory_budget:
        raise ValueError(
            f"gauss_newton_parts of a network with {dim:,} trainable parameters would need about "
            f"{_gib(fixed + per_example)} ({dim:,} x {dim:,} float64 matrices); the budget is "
            f"memory_budget={memory_budget:,} bytes ({_gib(memory_budget)}): use a smaller network or raise memory_budget"
        )
    chunk = max(1, min(n, int((memory_budget - fixed) // per_example)))

    def unflatten(vector):
        pieces = torch.split(vector, [math.prod(s) for s in shapes])
        return {name: p.view(s) for name, p, s in zip(names, pieces, shapes)}

    def log_p(vector, xc, yc):  # log-probability of the correct class, per example
        logits = functional_call(model, {**unflatten(vector), **constants}, (xc,))
        return -F.cross_entropy(logits, yc, reduction="none")

    hessian = torch.zeros(dim, dim, dtype=torch.float64, device=x.device)
    second = torch.zeros_like(hessian)
    uncentred = torch.zeros_like(hessian)
    g = torch.zeros(dim, dtype=torch.float64, device=x.device)
    with _bn_mode(model, "eval"):
        for start in range(0, n, chunk):
            xc, yc = x64[start:start + chunk], y[start:start + chunk]
            weight = len(xc) / n
            p0 = log_p(theta, xc, yc).exp().detach()
            # reverse over reverse, as hvp: the same exact matrix as torch.func.hessian (forward over
            # reverse), without forward-mode autograd, whose first use makes torch print a
            # FutureWarning of its own (torch.jit.script in its decompositions for jvp)
            hessian += weight * jacrev(jacrev(lambda t: -log_p(t, xc, yc).mean()))(theta)
            second += weight * jacrev(jacrev(lambda t: -(log_p(t, xc, yc).exp() / p0).mean()))(theta)
            # per-example gradients of L_i = -log p_i, one row each
            per_example_grads = vmap(grad(lambda t, xi, yi: -log_p(t, xi[None], yi[None])[0]), in_dims=(None, 0, 0))(theta, xc, yc)
            uncentred += per_example_grads.T @ per_example_grads / n
            g += per_example_grads.sum(0) / n
    outer = torch.outer(g, g)
    return GaussNewtonParts(hessian, uncentred - outer, outer, second, g, n)

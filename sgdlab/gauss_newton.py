"""The decomposition of the Hessian of the mean negative log-likelihood into its parts, as dense
matrices for a tiny network ("A Walk with SGD", eq. 2, derived in their appendix B):
H = C + g g^T + (a second-order term), with C the covariance of the per-example gradients and
g the mean gradient; and the top eigenvalue of the Gauss-Newton matrix of any network, from
matrix-free products.

The (generalised) Gauss-Newton matrix is G = (1/N) sum_i J_i^T A_i J_i, with J_i the Jacobian
of example i's logits with respect to the parameters and A_i = diag(p_i) - p_i p_i^T the
Hessian of the cross-entropy with respect to the logits (p_i the softmax). It is the Hessian
without the network's own second derivatives. A_i's entries are products p_ik (1 - p_ik) and
p_ik p_il: as the network grows confident (p_i near one-hot) they shrink, and G with them.

Conventions are those of :mod:`sgdlab.hessian`: the mean cross-entropy over a fixed sample
``(x, y)``, with respect to the trainable parameters only (flattened in the order of
``model.named_parameters()``); matrices are float64, in nats per squared unit of parameter.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from .hessian import (DEFAULT_MEMORY_BUDGET, LossOnSet, activation_bytes, batchnorm_mode, check_data,
                      check_lanczos_request, gibibytes, trainable_names)
from .lanczos import lanczos
from .params import Params, check_fits_model, flatten, unflatten


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
    check_data(x, y)
    check_fits_model(model, params)
    names = trainable_names(model)
    params64 = {k: t.double() if t.is_floating_point() else t for k, t in params.items()}
    x64 = x.double()
    constants = {k: t for k, t in params64.items() if k not in names}
    variables = {n: params64[n] for n in names}
    theta = flatten(variables)
    dim, n = len(theta), len(x)
    fixed = 6 * dim * dim * 8                         # H, C, g g^T, second order, one chunk's Hessian, a sum
    per_example = 3 * dim * activation_bytes(model, params64, x64) + dim * 8  # hessian's P tangents of the graph
    if fixed + per_example > memory_budget:
        raise ValueError(
            f"gauss_newton_parts of a network with {dim:,} trainable parameters would need about "
            f"{gibibytes(fixed + per_example)} ({dim:,} x {dim:,} float64 matrices); the budget is "
            f"memory_budget={memory_budget:,} bytes ({gibibytes(memory_budget)}): use a smaller network or raise "
            f"memory_budget"
        )
    chunk = max(1, min(n, int((memory_budget - fixed) // per_example)))

    def log_p(vector, xc, yc):  # log-probability of the correct class, per example
        logits = functional_call(model, {**unflatten(vector, variables), **constants}, (xc,))
        return -F.cross_entropy(logits, yc, reduction="none")

    hessian = torch.zeros(dim, dim, dtype=torch.float64, device=x.device)
    second = torch.zeros_like(hessian)
    uncentred = torch.zeros_like(hessian)
    g = torch.zeros(dim, dtype=torch.float64, device=x.device)
    with batchnorm_mode(model, "eval"):
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


def gauss_newton_product(loss: LossOnSet, v: Params) -> Params:
    """G v, with G the Gauss-Newton matrix of the mean cross-entropy of ``loss`` (a
    :class:`sgdlab.hessian.LossOnSet`: its sample, chunks and BatchNorm mode); exact, matrix-free.

    Per chunk: J v by the double-backward trick (J v = d<J^T u, v>/du for any u), then
    A J v = p * Jv - p <p, Jv> per example, then J^T (A J v) / chunk size by one backward
    pass; chunks are weighted by their size / N. Keeps nothing between products.
    """
    v = loss.as_tangent(v)

    def part(index: int) -> Params:
        start, stop = loss.chunks[index]
        leaves = loss.leaves()
        logits = functional_call(loss.model, {**leaves, **loss.constants}, (loss.x[start:stop],))  # (n, classes)
        p = logits.detach().softmax(-1)
        u = torch.zeros_like(logits, requires_grad=True)
        used = [n for n in loss.names if leaves[n].requires_grad]
        jt_u = torch.autograd.grad(logits, [leaves[n] for n in used], u, create_graph=True, allow_unused=True)
        pairs = [(part, v[n]) for part, n in zip(jt_u, used) if part is not None]
        jv = torch.autograd.grad([a for a, _ in pairs], u, [b for _, b in pairs])[0]            # (n, classes)
        a_jv = p * jv - p * (p * jv).sum(-1, keepdim=True)
        return loss.grad(logits, leaves, grad_outputs=a_jv / (stop - start))

    return loss.sum_over_chunks(part)


def gauss_newton_top_eigenvalues(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, k: int = 1, *,
                                 tol: float = 1e-3, max_iter: int = 100, seed: int = 0, chunk_size: int | None = None,
                                 bn: str = "eval", memory_budget: int = DEFAULT_MEMORY_BUDGET) -> torch.Tensor:
    """The ``k`` largest eigenvalues of the Gauss-Newton matrix G of the mean cross-entropy over ``(x, y)``.

    As :func:`sgdlab.hessian.top_eigenvalues` (Lanczos, the same options and conventions), with
    :func:`gauss_newton_product` in place of the Hessian-vector product. G is positive
    semi-definite; its top eigenvalue approaches the Hessian's when the network's second
    derivatives contribute little along the sharpest direction. Returns a float64 CPU tensor,
    largest first, in nats per squared parameter unit.
    """
    k, dim, basis_bytes = check_lanczos_request(model, params, k, max_iter, memory_budget)
    names = trainable_names(model)
    loss = LossOnSet(model, params, x, y, chunk_size=chunk_size, bn=bn, memory_budget=memory_budget,
                     reserved_bytes=basis_bytes)
    result = lanczos(lambda q: loss.flatten(gauss_newton_product(loss, loss.unflatten(q))), dim, k, tol=tol,
                     max_iter=max_iter, seed=seed, device=x.device, dtype=params[names[0]].dtype)
    return result.values.cpu()

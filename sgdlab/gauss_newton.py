"""The decomposition of the Hessian of the mean negative log-likelihood into its parts, as dense
matrices for a tiny network ("A Walk with SGD", eq. 2, derived in their appendix B):
H = C + g g^T + (a second-order term), with C the covariance of the per-example gradients and
g the mean gradient.

Conventions are those of :mod:`sgdlab.hessian`: the mean cross-entropy over a fixed sample
``(x, y)``, with respect to the trainable parameters only (flattened in the order of
``model.named_parameters()``); matrices are float64, in nats per squared unit of parameter.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from .hessian import DEFAULT_MEMORY_BUDGET, _bn_mode, _check_data, _gib, activation_bytes, trainable_names
from .params import Params, check_fits_model


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

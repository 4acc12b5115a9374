"""Lanczos with full reorthogonalisation: the largest eigenvalues of a symmetric operator known
only through its products with vectors (a Hessian, here, but nothing in this module knows it).

Vectors are flat tensors of length ``dim``; the tridiagonal matrix and the returned values are
float64, the Krylov basis is in ``dtype`` on ``device``. The start vector is drawn on the CPU
from ``seed``, so every device starts from the same direction.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import torch

from .checks import check_int


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
    k = check_int("k", k, 1, dim)
    max_iter = check_int("max_iter", max_iter, 1)
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

"""Curvature (sgdlab.hessian, sgdlab.lanczos, sgdlab.gauss_newton) and the recorders that measure it (sgdlab.recorders).

Every quantity is checked against an independent computation: dense Hessians from
``torch.func.hessian`` of the whole-set loss (one batch, no chunks) or of a BatchNorm MLP
written out by hand, ``torch.linalg.eigvalsh``, gradients from ``torch.autograd`` on saved
mini-batches, distances from saved parameters. Tiny networks, float64 where exactness is claimed.
"""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import sgdlab
from crash import CrashAt
from sgdlab import hessian
from sgdlab.gauss_newton import gauss_newton_parts, gauss_newton_product, gauss_newton_top_eigenvalues
from sgdlab.hessian import LossOnSet, alignment, gradient, hvp, top_eigenvalues
from sgdlab.lanczos import lanczos
from sgdlab.recorders import DistanceFromInitRecorder, GradientCosineRecorder, TopEigenvalueRecorder
from sgdlab.params import clone_params, model_params
from sgdlab.callbacks import Callback
from sgdlab.trajectory import fit_log_law, fit_power_law

N = 23  # examples in the tiny sample: chunks of 5 leave an uneven last chunk of 3


def tiny(digits, seed=0, **options):
    """A float64 MLP 64-5-10 (or as ``options`` say) and N float64 digits."""
    model = sgdlab.make_model("mlp", digits, seed=seed, **{"hidden": (5,), **options}).double()
    return model, model_params(model), digits.x_train[:N].double(), digits.y_train[:N]


def trainable(model):
    return [name for name, _ in model.named_parameters()]


def flat(model, tensors):
    return torch.cat([tensors[name].reshape(-1) for name in trainable(model)])


def unflat(model, vector):
    shapes = [p.shape for _, p in model.named_parameters()]
    pieces = torch.split(vector, [math.prod(s) for s in shapes])
    return {name: piece.view(s) for name, piece, s in zip(trainable(model), pieces, shapes)}


def whole_set_loss(model, params, x, y):
    """The mean loss over all of (x, y) in one batch, as a function of the flat trainable parameters (eval mode)."""
    constants = {k: v for k, v in params.items() if k not in trainable(model)}
    model.eval()
    return lambda theta: F.cross_entropy(functional_call(model, {**unflat(model, theta), **constants}, (x,)), y)


def dense_hessian(model, params, x, y):
    return torch.func.hessian(whole_set_loss(model, params, x, y))(flat(model, params))


def dense_gradient(model, params, x, y):
    return torch.func.grad(whole_set_loss(model, params, x, y))(flat(model, params))


def random_vector(model, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(p.shape, generator=g, dtype=dtype) for name, p in model.named_parameters()}


# ---------------------------------------------------------------- Hessian-vector products

@pytest.mark.parametrize("mode", hessian.HVP_MODES)
@pytest.mark.parametrize("chunk_size", [None, N, 5, 7, 1])
def test_hvp_equals_dense_hessian_times_vector_for_any_chunking(digits, chunk_size, mode):
    model, params, x, y = tiny(digits)
    v = random_vector(model)
    expected = dense_hessian(model, params, x, y) @ flat(model, v)
    ours = flat(model, hvp(model, params, x, y, v, chunk_size=chunk_size, mode=mode))
    assert torch.allclose(ours, expected, rtol=0, atol=1e-12 * expected.abs().max())


def test_uneven_last_chunk_is_weighted_by_its_size(digits):
    model, params, x, y = tiny(digits)
    v = random_vector(model)
    whole = flat(model, hvp(model, params, x, y, v, chunk_size=N))
    chunked = flat(model, hvp(model, params, x, y, v, chunk_size=5))
    assert torch.allclose(chunked, whole, rtol=0, atol=1e-13 * whole.abs().max())
    # the data make this test sensitive: the plain mean of the five chunks' products is far off
    parts = [flat(model, hvp(model, params, x[s:s + 5], y[s:s + 5], v)) for s in range(0, N, 5)]
    assert (torch.stack(parts).mean(0) - whole).abs().max() > 1e-3 * whole.abs().max()


def test_gradient_equals_autograd_on_the_whole_set(digits):
    model, params, x, y = tiny(digits)
    ours = flat(model, gradient(model, params, x, y, chunk_size=4))
    loss = F.cross_entropy(model.eval()(x), y)
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])
    assert torch.allclose(ours, expected, rtol=0, atol=1e-14)


def test_float32_vector_is_cast_to_float64_parameters(digits):
    model, params, x, y = tiny(digits)
    v = random_vector(model)
    single = hvp(model, params, x, y, {k: t.float() for k, t in v.items()})
    assert all(t.dtype == torch.float64 for t in single.values())
    expected = dense_hessian(model, params, x, y) @ flat(model, {k: t.float().double() for k, t in v.items()})
    assert torch.allclose(flat(model, single), expected, rtol=0, atol=1e-12 * expected.abs().max())


def batchnorm_mlp_loss(params, x, y, *, batch_statistics, eps=1e-5):
    """The MLP 64-4-10 with BatchNorm1d, written out: Linear, BatchNorm, ReLU, Linear, mean cross-entropy."""
    h = x.flatten(1) @ params["fc1.weight"].T + params["fc1.bias"]
    if batch_statistics:
        mean, var = h.mean(0), h.var(0, unbiased=False)
    else:
        mean, var = params["bn1.running_mean"], params["bn1.running_var"]
    h = torch.relu((h - mean) / torch.sqrt(var + eps) * params["bn1.weight"] + params["bn1.bias"])
    return F.cross_entropy(h @ params["out.weight"].T + params["out.bias"], y)


@pytest.mark.parametrize("mode", hessian.HVP_MODES)
@pytest.mark.parametrize("bn", ["eval", "batch"])
def test_batchnorm_hessian_matches_the_network_written_out(digits, bn, mode):
    model, params, x, y = tiny(digits, hidden=(4,), batchnorm=True)
    g = torch.Generator().manual_seed(3)
    params = {**params, "bn1.running_mean": torch.randn(4, generator=g, dtype=torch.float64),
              "bn1.running_var": torch.rand(4, generator=g, dtype=torch.float64) + 0.5}
    names = trainable(model)
    assert "bn1.running_mean" not in names  # running statistics are constants, never variables
    constants = {k: v for k, v in params.items() if k not in names}
    loss = lambda theta: batchnorm_mlp_loss({**unflat(model, theta), **constants}, x, y, batch_statistics=bn == "batch")
    expected_h = torch.func.hessian(loss)(flat(model, params))
    v = random_vector(model)
    running_mean = params["bn1.running_mean"].clone()
    model.train()
    ours = flat(model, hvp(model, params, x, y, v, bn=bn, mode=mode))
    expected = expected_h @ flat(model, v)
    assert torch.allclose(ours, expected, rtol=0, atol=1e-11 * expected.abs().max())
    assert torch.equal(params["bn1.running_mean"], running_mean)  # nothing updated in place
    assert model.training and all(m.track_running_stats for m in model.modules() if hasattr(m, "track_running_stats"))


def test_many_products_at_one_point_match_hvp_whether_graphs_are_kept_or_not(digits):
    model, params, x, y = tiny(digits)
    kept = LossOnSet(model, params, x, y)
    per_example = hessian.GRAPH_FACTOR * hessian.activation_bytes(model, params, x)
    fixed = 4 * 8 * kept.dim
    recomputed = LossOnSet(model, params, x, y, memory_budget=fixed + per_example * 10)  # chunks of 10: not all fit
    assert kept.graphs_fit and not recomputed.graphs_fit and len(recomputed.chunks) == 3
    h = dense_hessian(model, params, x, y)
    keep, recompute = kept.hvp_operator(), recomputed.hvp_operator()
    for seed in (1, 2, 3):
        v = random_vector(model, seed)
        expected = h @ flat(model, v)
        for product in (keep, recompute):
            assert torch.allclose(flat(model, product(v)), expected, rtol=0, atol=1e-12 * expected.abs().max())


# ---------------------------------------------------------------- top eigenvalues (Lanczos)

@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("tol", [1e-3, 1e-9])
@pytest.mark.parametrize("budget", ["all graphs kept", "chunks recomputed"])
def test_top_eigenvalues_match_eigvalsh_of_the_dense_hessian(digits, k, tol, budget):
    model, params, x, y = tiny(digits)
    h = dense_hessian(model, params, x, y)
    expected = torch.linalg.eigvalsh(h).flip(0)[:k]
    memory_budget = hessian.DEFAULT_MEMORY_BUDGET
    if budget == "chunks recomputed":  # room for the basis and one chunk of 8 examples: no graph kept
        basis = 100 * h.shape[0] * 8
        memory_budget = basis + 4 * 8 * h.shape[0] + 8 * hessian.GRAPH_FACTOR * hessian.activation_bytes(model, params, x)
    ours = top_eigenvalues(model, params, x, y, k, tol=tol, max_iter=100, memory_budget=memory_budget)
    assert ours.dtype == torch.float64 and ours.shape == (k,)
    # the promise of tol: each value within tol * (largest) of the eigenvalue
    assert (ours - expected).abs().max() <= tol * expected[0]


def test_float32_top_eigenvalue_agrees_with_float64_dense_hessian(digits):
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(8,))
    sgdlab.train(model, digits, lr=0.1, batch_size=50, steps=20, progress=False, evaluate=False)
    params, x, y = model_params(model), digits.x_train[:200], digits.y_train[:200]
    model64 = copy.deepcopy(model).double()
    params64 = {k: t.double() if t.is_floating_point() else t for k, t in params.items()}
    expected = torch.linalg.eigvalsh(dense_hessian(model64, params64, x.double(), y))[-1]
    ours = top_eigenvalues(model, params, x, y, tol=1e-4)
    assert abs(float(ours[0]) - float(expected)) <= 1e-4 * float(expected) + 1e-5


def test_top_eigenvectors_satisfy_the_eigen_equation(digits):
    model, params, x, y = tiny(digits)
    values, vectors = top_eigenvalues(model, params, x, y, 2, tol=1e-10, return_vectors=True)
    h = dense_hessian(model, params, x, y)
    for value, vector in zip(values, vectors):
        u = flat(model, vector)
        assert abs(float(u.norm()) - 1) < 1e-10
        assert float((h @ u - value * u).norm()) < 1e-8 * float(values[0])


def test_lanczos_on_a_known_symmetric_matrix():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    spectrum = torch.linspace(-3, 10, 40, dtype=torch.float64)
    a = q @ torch.diag(spectrum) @ q.T
    result = lanczos(lambda v: a @ v, 40, 4, tol=1e-10, max_iter=40, dtype=torch.float64)
    assert result.converged
    assert torch.allclose(result.values, spectrum.flip(0)[:4], atol=1e-8)
    assert torch.allclose(result.vectors @ a, result.values[:, None] * result.vectors, atol=1e-7)


def test_lanczos_continues_past_an_invariant_subspace():
    # three distinct eigenvalues: a Krylov space from one vector is invariant after 3 products,
    # but the 4th largest eigenvalue (0, repeated) still has to be found
    a = torch.diag(torch.tensor([5.0, 4.0] + [0.0] * 10, dtype=torch.float64))
    result = lanczos(lambda v: a @ v, 12, 4, tol=1e-10, dtype=torch.float64)
    assert result.converged and result.iterations >= 4
    assert torch.allclose(result.values, torch.tensor([5.0, 4.0, 0.0, 0.0], dtype=torch.float64), atol=1e-12)
    # the zero operator: every product is exactly 0, so each new direction must be drawn afresh
    result = lanczos(lambda v: 0 * v, 6, 3, dtype=torch.float64)
    assert result.converged and torch.equal(result.values, torch.zeros(3, dtype=torch.float64))


def test_lanczos_warns_when_it_runs_out_of_products():
    a = torch.diag(torch.linspace(1, 2, 50, dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result = lanczos(lambda v: a @ v, 50, 1, tol=1e-12, max_iter=3, dtype=torch.float64)
    assert not result.converged and result.iterations == 3


def test_lanczos_is_reproducible_with_a_seed(digits):
    model, params, x, y = tiny(digits)
    first = top_eigenvalues(model, params, x, y, 2, tol=1e-2, seed=5)
    assert torch.equal(first, top_eigenvalues(model, params, x, y, 2, tol=1e-2, seed=5))


# ---------------------------------------------------------------- alignment (eq. 4)

def test_alignment_matches_the_dense_computation_with_the_same_batches(digits):
    model, params, x, y = tiny(digits)
    h = dense_hessian(model, params, x, y)
    ours = alignment(model, params, x, y, batch_size=6, n_batches=5, seed=7)
    generator = torch.Generator().manual_seed(7)
    expected = []
    for _ in range(5):
        index = torch.randperm(N, generator=generator)[:6]
        g = dense_gradient(model, params, x[index], y[index])
        expected.append(float(g @ h @ g / (g @ g)))
    assert ours.dtype == torch.float64 and ours.shape == (5,)
    assert torch.allclose(ours, torch.tensor(expected, dtype=torch.float64), rtol=1e-10)
    assert ours.std() > 0  # one value per batch, so their spread can be shown


def test_alignment_is_seeded_and_whole_set_batches_repeat_one_value(digits):
    model, params, x, y = tiny(digits)
    assert torch.equal(alignment(model, params, x, y, 6, 4, seed=1), alignment(model, params, x, y, 6, 4, seed=1))
    assert not torch.equal(alignment(model, params, x, y, 6, 4, seed=1), alignment(model, params, x, y, 6, 4, seed=2))
    whole = alignment(model, params, x, y, N, 3)
    g, h = dense_gradient(model, params, x, y), dense_hessian(model, params, x, y)
    assert torch.allclose(whole, torch.full((3,), float(g @ h @ g / (g @ g)), dtype=torch.float64), rtol=1e-10)


def test_alignment_with_a_separate_hessian_sample(digits):
    model, params, x, y = tiny(digits)
    hx, hy = digits.x_train[100:117].double(), digits.y_train[100:117]
    ours = alignment(model, params, x, y, 8, 2, seed=0, hessian_x=hx, hessian_y=hy)
    h = dense_hessian(model, params, hx, hy)
    generator = torch.Generator().manual_seed(0)
    for value in ours:
        index = torch.randperm(N, generator=generator)[:8]
        g = dense_gradient(model, params, x[index], y[index])
        assert math.isclose(float(value), float(g @ h @ g / (g @ g)), rel_tol=1e-10)


# ---------------------------------------------------------------- Gauss-Newton parts (eq. 2)

def test_gauss_newton_parts_add_up_to_the_hessian(digits):
    model, params, x, y = tiny(digits)
    parts = gauss_newton_parts(model, params, x, y)
    h = dense_hessian(model, params, x, y)
    scale = float(h.abs().max())
    assert float((parts.hessian - h).abs().max()) <= 1e-12 * scale
    assert parts.max_error <= 1e-10
    # each part on its own, from per-example quantities computed one example at a time
    per_example = torch.stack([dense_gradient(model, params, x[i:i + 1], y[i:i + 1]) for i in range(N)])
    g = per_example.mean(0)
    assert torch.allclose(parts.gradient, g, rtol=0, atol=1e-14)
    assert torch.allclose(parts.outer, torch.outer(g, g), rtol=0, atol=1e-14)
    assert torch.allclose(parts.covariance, per_example.T @ per_example / N - torch.outer(g, g), rtol=0, atol=1e-13)
    second = torch.zeros_like(h)
    for i in range(N):
        log_p = lambda theta, i=i: -whole_set_loss(model, params, x[i:i + 1], y[i:i + 1])(theta)
        p = float(log_p(flat(model, params)).exp())
        second -= torch.func.hessian(lambda theta: log_p(theta).exp())(flat(model, params)) / (p * N)
    assert torch.allclose(parts.second_order, second, rtol=0, atol=1e-10 * scale)
    assert parts.n_examples == N and set(parts.norms()) == {"hessian", "covariance", "outer", "second_order"}


def test_gauss_newton_parts_of_a_float32_network_in_small_chunks(digits):
    model32 = sgdlab.make_model("mlp", digits, seed=0, hidden=(5,))
    params32 = model_params(model32)
    model, params, x, y = tiny(digits)
    whole = gauss_newton_parts(model, params, x, y)
    p = whole.hessian.shape[0]
    tight = 6 * p * p * 8 + 4 * (3 * p * hessian.activation_bytes(model, params, x) + p * 8)  # chunks of 4
    chunked = gauss_newton_parts(model32, params32, digits.x_train[:N], y, memory_budget=tight)
    for name in ("hessian", "covariance", "outer", "second_order"):
        assert torch.allclose(getattr(chunked, name), getattr(whole, name), rtol=0, atol=1e-12), name


# ---------------------------------------------------------------- recorders during training

class KeepSteps(Callback):
    """Saves the parameters before every step and the step's mini-batch."""

    wants_params_before = True

    def __init__(self):
        self.before, self.batches, self.after = [], [], []

    def on_step(self, step):
        self.before.append(clone_params(step.params_before))
        self.batches.append((step.x.clone(), step.y.clone()))
        self.after.append(clone_params(step.params_after))


def dense_gauss_newton(model, params, x, y):
    """G = (1/N) sum_i J_i^T (diag p_i - p_i p_i^T) J_i from the dense Jacobian of the logits (eval mode)."""
    constants = {k: v for k, v in params.items() if k not in trainable(model)}
    model.eval()
    logits = lambda theta: functional_call(model, {**unflat(model, theta), **constants}, (x,))
    theta = flat(model, params)
    jacobian = torch.func.jacrev(logits)(theta)                         # (N, classes, P)
    p = logits(theta).softmax(-1)
    a = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]             # (N, classes, classes)
    return torch.einsum("ncp,ncd,ndq->pq", jacobian, a, jacobian) / len(x)


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_gauss_newton_product_equals_the_dense_matrix_times_vector(digits, chunk_size):
    model, params, x, y = tiny(digits, batchnorm=True)
    g = dense_gauss_newton(model, params, x, y)
    v = torch.randn(len(g), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = LossOnSet(model, params, x, y, chunk_size=chunk_size)
    product = flat(model, gauss_newton_product(loss, unflat(model, v)))
    assert torch.allclose(product, g @ v, rtol=0, atol=1e-12 * float(g.abs().max()))


def test_gauss_newton_top_eigenvalues_match_eigvalsh_and_the_hessian_of_a_linear_model(digits):
    model, params, x, y = tiny(digits)
    expected = torch.linalg.eigvalsh(dense_gauss_newton(model, params, x, y)).flip(0)[:2]
    values = gauss_newton_top_eigenvalues(model, params, x, y, 2, tol=1e-8)
    assert torch.allclose(values, expected, rtol=1e-6, atol=0)
    # no hidden layer: the logits are linear in the parameters, so G is the Hessian
    linear, linear_params, x, y = tiny(digits, hidden=())
    assert torch.allclose(gauss_newton_top_eigenvalues(linear, linear_params, x, y, 2, tol=1e-8),
                          top_eigenvalues(linear, linear_params, x, y, 2, tol=1e-8), rtol=1e-6, atol=0)


def test_gradient_cosine_matches_gradients_recomputed_from_saved_batches(digits):
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(8,), batchnorm=True)
    template = copy.deepcopy(model)
    cosine, keep = GradientCosineRecorder(), KeepSteps()
    sgdlab.train(model, digits, lr=0.05, batch_size=64, steps=8, momentum=0.9, weight_decay=1e-2,
                 callbacks=[cosine, keep], progress=False, evaluate=False)
    gradients = []
    for before, (xb, yb) in zip(keep.before, keep.batches):
        template.load_state_dict(before)
        template.train()  # as the step computed it: train-mode BatchNorm, no weight decay in the gradient
        loss = F.cross_entropy(template(xb), yb)
        gradients.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(template.parameters()))]).double())
    expected = [float(a @ b / (a.norm() * b.norm())) for a, b in zip(gradients, gradients[1:])]
    assert cosine.steps.tolist() == list(range(1, 8))
    assert np.allclose(cosine.cosines, expected, rtol=0, atol=1e-6)


def test_distance_from_init_matches_saved_parameters_and_ignores_buffers(digits):
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(8,), batchnorm=True)
    start = model_params(copy.deepcopy(model), buffers=False)
    distance, keep = DistanceFromInitRecorder(), KeepSteps()
    sgdlab.train(model, digits, lr=0.1, batch_size=100, steps=6, callbacks=[distance, keep], progress=False, evaluate=False)
    names = trainable(model)
    expected = [sgdlab.distance(start, {n: after[n] for n in names}) for after in keep.after]
    assert distance.iterations.tolist() == [1, 2, 3, 4, 5, 6]
    assert np.allclose(distance.distances, expected, rtol=1e-12)


def test_top_eigenvalue_recorder_matches_dense_hessians_of_saved_parameters(digits):
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(6,), batchnorm=True)
    initial = clone_params(model_params(model))
    x, y = digits.x_train[:60], digits.y_train[:60]
    sharpness, keep = TopEigenvalueRecorder(every=3, x=x, y=y, tol=1e-6), KeepSteps()
    sgdlab.train(model, digits, lr=0.1, batch_size=100, steps=7, callbacks=[sharpness, keep], progress=False, evaluate=False)
    assert sharpness.iterations.tolist() == [0, 3, 6]
    model64 = copy.deepcopy(model).double()
    for iterations, value in zip(sharpness.iterations, sharpness.values):
        params = initial if iterations == 0 else keep.after[iterations - 1]
        params64 = {k: t.double() if t.is_floating_point() else t for k, t in params.items()}
        expected = float(torch.linalg.eigvalsh(dense_hessian(model64, params64, x.double(), y))[-1])
        assert abs(value - expected) <= 1e-4 * expected


def test_top_eigenvalue_recorder_records_loss_confidence_and_gauss_newton_of_saved_parameters(digits):
    model = sgdlab.make_model("mlp", digits, seed=0, hidden=(6,))
    initial = clone_params(model_params(model))
    x, y = digits.x_train[:60], digits.y_train[:60]
    sharpness, keep = TopEigenvalueRecorder(every=3, x=x, y=y, tol=1e-6, gauss_newton=True), KeepSteps()
    sgdlab.train(model, digits, lr=0.1, batch_size=100, steps=7, callbacks=[sharpness, keep], progress=False, evaluate=False)
    model64 = copy.deepcopy(model).double()
    for i, iterations in enumerate(sharpness.iterations):
        params = initial if iterations == 0 else keep.after[iterations - 1]
        params64 = {k: t.double() if t.is_floating_point() else t for k, t in params.items()}
        logits = functional_call(model64, params64, (x.double(),))
        assert math.isclose(sharpness.losses[i], float(F.cross_entropy(logits, y)), rel_tol=1e-5)
        assert math.isclose(sharpness.confidences[i], float(logits.softmax(-1).max(-1).values.mean()), rel_tol=1e-5)
        expected = float(torch.linalg.eigvalsh(dense_gauss_newton(model64, params64, x.double(), y))[-1])
        assert abs(sharpness.gauss_newton_values[i] - expected) <= 1e-4 * expected
    assert len(TopEigenvalueRecorder().gauss_newton_values) == 0   # off unless asked for


def test_recorders_resume_from_a_checkpoint_as_if_never_interrupted(digits, tmp_path):
    x, y = digits.x_train[:50], digits.y_train[:50]

    def run(crash_at=None, checkpoint=None):
        recorders = [GradientCosineRecorder(), DistanceFromInitRecorder(), TopEigenvalueRecorder(every=4, x=x, y=y)]
        model = sgdlab.make_model("mlp", digits, seed=0, hidden=(6,))
        sgdlab.train(model, digits, lr=0.1, batch_size=300, epochs=3, callbacks=[*recorders, CrashAt(crash_at)],
                     checkpoint=checkpoint, progress=False, evaluate=False)
        return recorders

    uninterrupted = run()
    with pytest.raises(KeyboardInterrupt):
        run(crash_at=7, checkpoint=tmp_path / "run.pt")  # 5 steps per epoch: dies in the second epoch
    resumed = run(checkpoint=tmp_path / "run.pt")
    (cos_a, dist_a, eig_a), (cos_b, dist_b, eig_b) = uninterrupted, resumed
    assert cos_b.steps.tolist() == cos_a.steps.tolist() == list(range(1, 15))
    assert np.array_equal(cos_b.cosines, cos_a.cosines)
    assert np.array_equal(dist_b.distances, dist_a.distances) and len(dist_a.distances) == 15
    assert eig_b.iterations.tolist() == eig_a.iterations.tolist() == [0, 4, 8, 12]
    assert np.array_equal(eig_b.values, eig_a.values)


def test_a_recorder_used_twice_records_only_the_second_run(digits):
    cosine = GradientCosineRecorder()
    for _ in range(2):
        sgdlab.train(sgdlab.make_model("mlp", digits, seed=0, hidden=(4,)), digits, lr=0.1, batch_size=100, steps=3,
                     callbacks=[cosine], progress=False, evaluate=False)
    assert cosine.steps.tolist() == [1, 2]


# ---------------------------------------------------------------- distance laws

@pytest.mark.parametrize("space", ["linear", "log"])
def test_log_and_power_laws_recover_their_coefficients_in_either_space(space):
    t = np.arange(1, 200, dtype=np.float64)
    log_fit = fit_log_law(t, 2.0 + 3.0 * np.log(t), space=space)
    assert np.allclose(log_fit.coefficients, (2.0, 3.0)) and math.isclose(log_fit.r2, 1.0) and log_fit.space == space
    power_fit = fit_power_law(t, 0.5 * t ** 0.7, space=space)
    assert np.allclose(power_fit.coefficients, (0.5, 0.7)) and math.isclose(power_fit.r2, 1.0)
    # each law fits its own curve better than the other law does, scored in the same space
    assert fit_power_law(t, 2.0 + 3.0 * np.log(t), space=space).r2 < log_fit.r2
    assert fit_log_law(t, 0.5 * t ** 0.7, space=space).r2 < power_fit.r2
    assert np.allclose(log_fit([1.0, math.e]), [2.0, 5.0])


def test_law_fits_minimise_the_squared_error_of_their_own_space():
    """Against a brute-force grid: no (coefficients) pair on it has a smaller sum of squares
    in the fit's space, and R² is that space's (1 - residual / total sum of squares)."""
    rng = np.random.default_rng(0)
    t = np.arange(1, 120, dtype=np.float64)
    d = (1.0 + 2.0 * np.log(t)) * np.exp(rng.normal(0, 0.05, len(t)))    # noisy, positive
    transform = {"linear": lambda v: v, "log": np.log}
    for space, f in transform.items():
        for fit, law in ((fit_log_law(t, d, space=space), lambda a, b: a + b * np.log(t)),
                         (fit_power_law(t, d, space=space), lambda c, p: c * t ** p)):
            first, second = fit.coefficients
            best = np.sum((f(d) - f(law(first, second))) ** 2)
            for da in np.linspace(-0.05, 0.05, 11):
                for db in np.linspace(-0.05, 0.05, 11):
                    values = law(first * (1 + da), second * (1 + db))
                    if np.all(values > 0):
                        assert np.sum((f(d) - f(values)) ** 2) >= best * (1 - 1e-9)
            total = np.sum((f(d) - f(d).mean()) ** 2)
            assert math.isclose(fit.r2, 1 - best / total, rel_tol=1e-9)


def test_law_fits_reject_bad_series():
    with pytest.raises(ValueError, match="same length, at least 3"):
        fit_log_law([1, 2], [1.0, 2.0])
    with pytest.raises(ValueError, match="t must be positive"):
        fit_log_law([0, 1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="positive distances"):
        fit_power_law([1, 2, 3], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="positive distances"):
        fit_log_law([1, 2, 3], [0.0, 1.0, 2.0], space="log")
    with pytest.raises(ValueError, match="space='cubic' is not known"):
        fit_log_law([1, 2, 3], [1.0, 2.0, 3.0], space="cubic")


# ---------------------------------------------------------------- bad input

def test_vectors_that_do_not_match_the_parameters_are_refused(digits):
    model, params, x, y = tiny(digits)
    v = random_vector(model)
    missing = {k: t for k, t in v.items() if k != "out.bias"}
    with pytest.raises(ValueError, match=r"missing \['out.bias'\]"):
        hvp(model, params, x, y, missing)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        hvp(model, params, x, y, {**v, "extra": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"v\['fc1.weight'\] has shape \(5, 63\); parameter 'fc1.weight' is a tensor of shape \(5, 64\)"):
        hvp(model, params, x, y, {**v, "fc1.weight": torch.zeros(5, 63)})
    with pytest.raises(ValueError, match=r"v\['out.bias'\] has type ndarray"):
        hvp(model, params, x, y, {**v, "out.bias": np.zeros(10)})
    with pytest.raises(ValueError, match="got a Tensor"):
        hvp(model, params, x, y, flat(model, v))
    with pytest.raises(ValueError, match="params does not fit the model"):
        hvp(model, {k: t for k, t in params.items() if k != "out.bias"}, x, y, v)
    with pytest.raises(ValueError, match="mode='forward' is not known; choose one of: reverse-over-reverse, forward-over-reverse"):
        hvp(model, params, x, y, v, mode="forward")


def test_batch_sizes_and_counts_out_of_range_are_refused(digits):
    model, params, x, y = tiny(digits)
    with pytest.raises(ValueError, match=rf"batch_size must be an int in 1..{N}, got batch_size={N + 1}"):
        alignment(model, params, x, y, N + 1, 2)
    with pytest.raises(ValueError, match=rf"batch_size must be an int in 1..{N}, got batch_size=0"):
        alignment(model, params, x, y, 0, 2)
    with pytest.raises(ValueError, match="n_batches must be an int >= 1, got n_batches=0"):
        alignment(model, params, x, y, 5, 0)
    with pytest.raises(ValueError, match="give both hessian_x and hessian_y"):
        alignment(model, params, x, y, 5, 2, hessian_x=x)
    with pytest.raises(ValueError, match="x and y must hold the same"):
        alignment(model, params, x, y[:-1], 5, 2)
    with pytest.raises(ValueError, match="hessian_x and hessian_y must hold the same"):
        alignment(model, params, x, y, 5, 2, hessian_x=x, hessian_y=y[:-1])
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1, got chunk_size=0"):
        hvp(model, params, x, y, random_vector(model), chunk_size=0)
    with pytest.raises(ValueError, match="bn='train' is not known"):
        gradient(model, params, x, y, bn="train")
    with pytest.raises(ValueError, match="every must be an int >= 1, got every=0"):
        TopEigenvalueRecorder(every=0)


def test_eigenvalue_counts_out_of_range_are_refused(digits):
    model, params, x, y = tiny(digits)
    with pytest.raises(ValueError, match="k must be an int >= 1, got k=0"):
        top_eigenvalues(model, params, x, y, 0)
    with pytest.raises(ValueError, match=r"k must be an int in 1..385 \(the number of trainable parameters\), got k=386"):
        top_eigenvalues(model, params, x, y, 386)
    with pytest.raises(ValueError, match="max_iter must be an int >= 1"):
        top_eigenvalues(model, params, x, y, 1, max_iter=0)
    with pytest.raises(ValueError, match="k must be an int in 1..4, got k=0"):
        lanczos(lambda v: v, 4, 0)
    with pytest.raises(ValueError, match="tol must be positive"):
        lanczos(lambda v: v, 4, 1, tol=0.0)


def test_requests_over_the_memory_budget_are_refused(digits):
    model, params, x, y = tiny(digits)
    v = random_vector(model)
    with pytest.raises(ValueError, match="even one example per chunk would need .* more than the budget memory_budget=10,000"):
        hvp(model, params, x, y, v, memory_budget=10_000)
    per_example = hessian.GRAPH_FACTOR * hessian.activation_bytes(model, params, x)
    budget = 4 * 8 * 385 + 5 * per_example
    assert torch.isfinite(flat(model, hvp(model, params, x, y, v, chunk_size=5, memory_budget=budget))).all()
    with pytest.raises(ValueError, match="chunk_size=6 would need .* more than the budget"):
        hvp(model, params, x, y, v, chunk_size=6, memory_budget=budget)
    with pytest.raises(ValueError, match="max_iter=100 Lanczos vectors of 385 parameters .* lower max_iter"):
        top_eigenvalues(model, params, x, y, 1, memory_budget=100_000)
    with pytest.raises(ValueError, match="float64 matrices.*memory_budget=1,000,000"):
        gauss_newton_parts(model, params, x, y, memory_budget=1_000_000)
    with pytest.raises(ValueError, match="bytes kept by the caller"):  # the stored batch gradients count
        alignment(model, params, x, y, 5, 50, memory_budget=50 * 385 * 8 + 4 * 8 * 385 + per_example - 1)


def test_the_iterate_recorder_keeps_exactly_the_chosen_updates_as_they_were(digits):
    from sgdlab.recorders import IterateRecorder
    every, chosen = IterateRecorder(every=1), IterateRecorder(every=4, at=(3,), epochs=True, buffers=False)
    model = sgdlab.make_model("mlp", digits, seed=0, batchnorm=True)
    sgdlab.train(model, digits, lr=0.1, batch_size=500, epochs=3, progress=False, evaluate=False,
                 callbacks=[every, chosen])
    assert every.steps == list(range(10)) and chosen.steps == [0, 3, 4, 6, 8, 9]  # 3 updates per epoch
    for t, kept in zip(chosen.steps, chosen.iterates):
        reference = every.iterates[t]                         # the copy kept after every update
        assert set(kept) == {n for n, _ in model.named_parameters()}   # buffers=False: no running statistics
        assert all(torch.equal(kept[n], reference[n]) for n in kept)
    assert not torch.equal(every.iterates[1]["fc1.weight"], every.iterates[0]["fc1.weight"])  # copies, not views
    assert chosen.flat().shape == (6, sgdlab.num_parameters(sgdlab.model_params(model, buffers=False)))
    with pytest.raises(ValueError, match="every"):
        IterateRecorder(every=0)


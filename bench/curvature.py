"""The top Hessian eigenvalue: sgdlab's Lanczos against PyHessian's power iteration; the cost of one HVP.

What is measured
----------------
Two cases: ``make_model("mlp", digits)`` and ``make_model("cnn", mnist1d)`` (seed 0), each
trained ``EPOCHS`` epochs of SGD (lr 0.1, batch 32, seed 0) so that the Hessian is not the one
at initialisation. Then, over the WHOLE training set in one batch (float32, CPU, eval mode),
the Hessian of the mean cross-entropy, its top eigenvalue by:

* sgdlab: ``top_eigenvalues(model, params, x, y, k=1, tol=TOL, max_iter=MAX_ITER, seed=0)``:
  Lanczos with full reorthogonalisation, stopped when the top Ritz pair's residual is at most
  ``tol`` times the largest Ritz value; the gradient graph is built once and kept for all
  products (it fits the default memory budget here).
* pyhessian: ``hessian(model, CrossEntropyLoss(), data=(x, y), cuda=False)
  .eigenvalues(maxIter=MAX_ITER, tol=TOL, top_n=1)`` from PyPI, after ``torch.manual_seed(0)``
  (its random start comes from torch's global generator): power iteration, stopped when two
  successive Rayleigh quotients differ by less than ``tol`` relatively. Timed from its
  construction (forward and ``backward(create_graph=True)``) to the value, through a thin
  wrapper (``pyhessian_top``) that clears the parameters' ``.grad`` before and after.

Same model, data, ``tol`` and product budget for both (the two stopping rules differ; see
above). Each is run once to warm up, then timed ``repetitions`` times, alternating; medians
are reported, with their ratio (pyhessian / sgdlab; above 1: sgdlab is faster). Both values
are compared with each other (goal: within 1%) and with a reference from sgdlab at
``tol = 1e-8`` (untimed). The numbers of Hessian-vector products come from separate untimed
runs (for PyHessian, by counting calls to its ``hessian_vector_product``). An untimed check at
``tol = 1e-3`` shows why ``TOL`` is tighter than PyHessian's default.

HVP cost: median seconds of one ``sgdlab.hessian.hvp`` over the whole set (its default
mode, reverse-over-reverse; nothing kept between calls) divided by one
``sgdlab.hessian.gradient`` over the same data (one ``torch.autograd.grad``), alternating.
Also reported, not judged: the same for ``hvp(..., mode="forward-over-reverse")``
(``torch.func.jvp`` of ``grad``), one product with the kept graphs
(``LossOnSet.hvp_operator``, what Lanczos uses; building the graphs is timed separately),
and each over the plain ``loss.backward()`` gradient.

Targets (CPU): pyhessian / sgdlab seconds >= 1.5, eigenvalues within 1%, HVP / gradient <= 2.5.
``torch.set_num_threads(THREADS)`` with THREADS = 1: the machine may be shared, and one
thread gives steadier timings; the load average is recorded.

Run:  .venv/bin/python bench/curvature.py [--quick] [--out PATH]
"""

import statistics, sys, time, warnings

import torch
import torch.nn.functional as F

import sgdlab
from machine import bench_arguments, describe_machine, write_result
from sgdlab.hessian import LossOnSet, gradient, hvp, top_eigenvalues
from sgdlab.lanczos import lanczos
from sgdlab.params import model_params

try:
    from pyhessian import hessian
    PEER_ERROR = None
except ImportError as error:  # recorded in the JSON; the HVP cost is still measured
    hessian, PEER_ERROR = None, repr(error)

THREADS = 1
TOL = 1e-4            # both methods; PyHessian's default 1e-3 stops its power iteration early (see loose_tolerance_check)
LOOSE_TOL = 1e-3
REFERENCE_TOL = 1e-8
MAX_ITER = 500        # products at most, both methods
EPOCHS = 5
SEED = 0
TARGETS = {"speedup_over_pyhessian": 1.5, "eigenvalue_relative_difference": 0.01, "hvp_over_gradient": 2.5}


def timed(fn, *args, **kwargs):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def pyhessian_top(model, x, y, tol, max_iter, seed=SEED):
    """PyHessian's top eigenvalue, seeded, without leftovers.

    Its start vector comes from torch's global generator (seeded here). Its constructor runs
    ``loss.backward(create_graph=True)``, which on torch 2.x warns that ``.grad`` now holds a
    graph (a reference cycle); the gradients are cleared before (so nothing accumulates into
    them) and after (which breaks the cycle), and the warning is silenced.
    """
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            values, _ = hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False).eigenvalues(
                maxIter=max_iter, tol=tol, top_n=1)
    finally:
        model.zero_grad(set_to_none=True)
    return float(values[0])


def pyhessian_products(model, x, y, tol):
    """How many Hessian-vector products PyHessian uses (an untimed run that counts them)."""
    module = sys.modules["pyhessian.hessian"]
    original, count = module.hessian_vector_product, [0]

    def counting(*args):
        count[0] += 1
        return original(*args)

    module.hessian_vector_product = counting
    try:
        value = pyhessian_top(model, x, y, tol, MAX_ITER)
    finally:
        module.hessian_vector_product = original
    return value, count[0]


def sgdlab_top(model, params, x, y, tol, max_iter=MAX_ITER):
    return float(top_eigenvalues(model, params, x, y, 1, tol=tol, max_iter=max_iter, seed=SEED)[0])


def sgdlab_products(model, params, x, y, tol):
    """How many products sgdlab's Lanczos uses: the steps of ``top_eigenvalues``, untimed."""
    loss = LossOnSet(model, params, x, y)
    product = loss.hvp_operator()
    result = lanczos(lambda q: loss.flatten(product(loss.unflatten(q))), loss.dim, 1, tol=tol, max_iter=MAX_ITER,
                     seed=SEED, device=x.device, dtype=x.dtype)
    return float(result.values[0]), result.iterations


def alternate(ways: dict, repetitions: int) -> dict:
    """Seconds of each way, run in turn ``repetitions`` times after one warm-up call each."""
    for fn in ways.values():
        fn()
    seconds = {name: [] for name in ways}
    for _ in range(repetitions):
        for name, fn in ways.items():
            seconds[name].append(timed(fn)[0])
    return seconds


def hvp_cost(model, params, x, y, repetitions):
    """Seconds of one HVP and of one gradient over (x, y), and their ratios."""
    g = torch.Generator().manual_seed(SEED)
    v = {name: torch.randn(p.shape, generator=g) for name, p in model.named_parameters()}
    build_seconds, product = timed(LossOnSet(model, params, x, y).hvp_operator)

    def autograd_gradient():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model.eval()(x), y).backward()
        model.zero_grad(set_to_none=True)

    seconds = alternate({"hvp": lambda: hvp(model, params, x, y, v), "gradient": lambda: gradient(model, params, x, y),
                         "forward_over_reverse_hvp": lambda: hvp(model, params, x, y, v, mode="forward-over-reverse"),
                         "kept_graph_product": lambda: product(v), "autograd_gradient": autograd_gradient}, repetitions)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    ratio = median["hvp"] / median["gradient"]
    return dict(seconds=seconds, median_seconds=median, build_kept_graphs_seconds=build_seconds,
                hvp_over_gradient=ratio,
                forward_over_reverse_hvp_over_gradient=median["forward_over_reverse_hvp"] / median["gradient"],
                kept_graph_product_over_gradient=median["kept_graph_product"] / median["gradient"],
                hvp_over_autograd_gradient=median["hvp"] / median["autograd_gradient"],
                gradient_over_autograd_gradient=median["gradient"] / median["autograd_gradient"],
                target=TARGETS["hvp_over_gradient"], meets_target=ratio <= TARGETS["hvp_over_gradient"])


def run_case(name, arch, data, epochs, repetitions):
    model = sgdlab.make_model(arch, data, seed=SEED)
    history = sgdlab.train(model, data, lr=0.1, batch_size=32, epochs=epochs, seed=SEED, progress=False)
    model.eval()
    params, x, y = model_params(model), data.x_train, data.y_train
    reference = sgdlab_top(model, params, x, y, REFERENCE_TOL)
    record = dict(name=name, model=arch, dataset=data.name, n_train=data.n_train,
                  parameters=sum(p.numel() for p in model.parameters()),
                  training=dict(lr=0.1, batch_size=32, epochs=epochs, seed=SEED, final_train_loss=history.train_loss[-1],
                                final_train_accuracy=history.train_accuracy[-1]),
                  tol=TOL, max_iter=MAX_ITER, reference_eigenvalue=reference, reference_tol=REFERENCE_TOL)
    ours, our_products = sgdlab_products(model, params, x, y, TOL)
    record["products"] = {"sgdlab": our_products}
    if hessian is not None:
        peer, peer_products = pyhessian_products(model, x, y, TOL)
        record["products"]["pyhessian"] = peer_products
        seconds = alternate({"sgdlab": lambda: sgdlab_top(model, params, x, y, TOL),
                             "pyhessian": lambda: pyhessian_top(model, x, y, TOL, MAX_ITER)}, repetitions)
        median = {way: statistics.median(s) for way, s in seconds.items()}
        speedup = median["pyhessian"] / median["sgdlab"]
        difference = abs(ours - peer) / abs(ours)
        loose = {"sgdlab": sgdlab_top(model, params, x, y, LOOSE_TOL), "pyhessian": pyhessian_top(model, x, y, LOOSE_TOL, MAX_ITER)}
        record.update(
            eigenvalues={"sgdlab": ours, "pyhessian": peer},
            relative_error_vs_reference={"sgdlab": abs(ours - reference) / reference, "pyhessian": abs(peer - reference) / reference},
            relative_difference=difference, seconds=seconds, median_seconds=median, speedup_over_pyhessian=speedup,
            loose_tolerance_check=dict(tol=LOOSE_TOL, eigenvalues=loose,
                                       relative_error_vs_reference={w: abs(v - reference) / reference for w, v in loose.items()}),
            targets={k: TARGETS[k] for k in ("speedup_over_pyhessian", "eigenvalue_relative_difference")},
            meets_target={"speedup_over_pyhessian": speedup >= TARGETS["speedup_over_pyhessian"],
                          "eigenvalue_relative_difference": difference <= TARGETS["eigenvalue_relative_difference"]})
    else:
        record["eigenvalues"] = {"sgdlab": ours}
    record["hvp_cost"] = hvp_cost(model, params, x, y, 3 * repetitions)
    return record




def print_table(cases):
    header = (f"{'case':<16} {'sgdlab λ':>10} {'pyhessian λ':>12} {'diff':>8} {'HVPs':>9} {'sgdlab s':>9} "
              f"{'pyhessian s':>12} {'speedup':>8} {'HVP/grad':>9}")
    print(header, "-" * len(header), sep="\n")
    for c in cases:
        hv = c["hvp_cost"]
        hvp_cell = f"{hv['hvp_over_gradient']:>6.2f}{' ok' if hv['meets_target'] else ' NO'}"
        if "pyhessian" not in c["eigenvalues"]:
            print(f"{c['name']:<16} {c['eigenvalues']['sgdlab']:>10.5f} {'-':>12} {'-':>8} {c['products']['sgdlab']:>9} "
                  f"{'-':>9} {'-':>12} {'-':>8} {hvp_cell}")
            continue
        ok = c["meets_target"]
        print(f"{c['name']:<16} {c['eigenvalues']['sgdlab']:>10.5f} {c['eigenvalues']['pyhessian']:>12.5f} "
              f"{c['relative_difference']:>7.1e}{'' if ok['eigenvalue_relative_difference'] else '!'} "
              f"{c['products']['sgdlab']:>4}/{c['products']['pyhessian']:<4} {c['median_seconds']['sgdlab']:>9.3f} "
              f"{c['median_seconds']['pyhessian']:>12.3f} {c['speedup_over_pyhessian']:>5.2f}x{' ok' if ok['speedup_over_pyhessian'] else ' NO'} "
              f"{hvp_cell}")
    print(f"tol {TOL:g}; HVPs: sgdlab/pyhessian; speedup = pyhessian s / sgdlab s (target >= {TARGETS['speedup_over_pyhessian']}); "
          f"HVP/grad: one hvp / one gradient (target <= {TARGETS['hvp_over_gradient']})")
    for c in cases:
        hv = c["hvp_cost"]
        print(f"{c['name']:<16} HVP/grad: reverse-over-reverse {hv['hvp_over_gradient']:.2f}, forward-over-reverse "
              f"{hv['forward_over_reverse_hvp_over_gradient']:.2f}, kept-graph product {hv['kept_graph_product_over_gradient']:.2f}; "
              f"sgdlab gradient / loss.backward() {hv['gradient_over_autograd_gradient']:.2f}")


def main():
    parser = bench_arguments(__doc__, "curvature", "one training epoch, one repetition (a smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    epochs, reps = (1, 1) if args.quick else (EPOCHS, 5)
    started = time.perf_counter()
    cases = [run_case("mlp / digits", "mlp", sgdlab.load_dataset("digits", device="cpu"), epochs, reps),
             run_case("cnn / mnist1d", "cnn", sgdlab.load_dataset("mnist1d", device="cpu"), epochs, reps)]
    total = time.perf_counter() - started
    summary = {c["name"]: dict(eigenvalue_relative_difference=c.get("relative_difference"),
                               speedup_over_pyhessian=c.get("speedup_over_pyhessian"),
                               hvp_over_gradient=c["hvp_cost"]["hvp_over_gradient"],
                               meets_target={**c.get("meets_target", {}), "hvp_over_gradient": c["hvp_cost"]["meets_target"]})
               for c in cases}
    result = dict(benchmark="top Hessian eigenvalue over the whole training set: sgdlab Lanczos vs PyHessian power iteration; "
                            "cost of one HVP / one gradient",
                  quick=args.quick, tol=TOL, max_iter=MAX_ITER, targets=TARGETS,
                  speedup="pyhessian median seconds / sgdlab median seconds; above 1: sgdlab is faster",
                  hvp_over_gradient="median seconds of sgdlab.hessian.hvp (default mode, reverse-over-reverse) / of sgdlab.hessian.gradient, whole set",
                  pyhessian_error=PEER_ERROR, total_seconds=round(total, 1), machine=describe_machine('pyhessian'), summary=summary, cases=cases)
    write_result(args.out, result)
    print_table(cases)
    print(f"\n{total:.0f} s in all; written to {args.out}")


if __name__ == "__main__":
    main()

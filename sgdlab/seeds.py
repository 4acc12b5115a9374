"""Several seeds of one model trained together, batched with ``torch.func``.

``train_seeds(arch, dataset, seeds, lr=..., batch_size=..., epochs=...)`` trains one network
per seed at once: the seeds' parameters are stacked along a new first axis and a single
``vmap`` over ``functional_call`` runs every seed's forward pass; one backward pass gives
every seed's gradient (the loss summed over seeds has, for each seed's parameters, that
seed's gradient and nothing else). It reproduces sequential runs:

* seed ``s`` starts from ``make_model(arch, dataset, seed=s, **model_options)``;
* seed ``s`` sees the mini-batches ``train(..., seed=s)`` would draw: its own
  ``torch.Generator(device).manual_seed(s)``, one ``torch.randperm`` per epoch (and the
  augmentation's draws, when the data set has one), as in :func:`sgdlab.data.epoch_batches`;
* the update is ``torch.optim.SGD``'s without momentum:
  ``w <- w - lr * (g + weight_decay * w)``, one per mini-batch, at a constant rate;
* BatchNorm trains on batch statistics and updates its running statistics per seed, as in
  train mode; evaluation uses the running statistics (eval mode), as :func:`sgdlab.train`;
* divergence is judged per seed as :func:`sgdlab.train` judges it (a non-finite mini-batch
  loss, or one above ``diverge_factor`` times the seed's first loss); a diverged seed stops
  there, keeps the parameters it had, and the others go on.

So ``train_seeds(...).histories[i]`` equals ``train(make_model(..., seed=seeds[i]), ...,
seed=seeds[i]).history`` up to float32 rounding (batched matrix products and the
cross-entropy, taken with the classes on axis 1, add in another order): about 1e-6 in the
losses after hundreds of steps on the CPU, and up to about 1e-4 in the parameters of
networks with BatchNorm, where such differences grow faster.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import chi2
from scipy.stats import f as f_distribution
from torch.func import functional_call, vmap

from .data import Dataset, steps_per_epoch
from .models import make_model
from .params import Params
from .checks import check_seed
from .callbacks import History, has_diverged, mark_diverged
from .train import check_batch_size, check_dataset, check_diverge_factor, check_lr, check_weight_decay, train

# examples per evaluation chunk summed over the seeds (4096 // len(seeds) each), as
# sgdlab.params.loss_and_accuracy's 4096 for one model: the activations of all seeds on one
# chunk then stay in a CPU core's cache (on digits, 10 seeds: 409 examples a chunk evaluate
# twice as fast as the whole training set at once)
EVAL_CHUNK = 4096


@dataclasses.dataclass
class SeedsResult:
    """What :func:`train_seeds` returns.

    ``histories[i]`` is the :class:`~sgdlab.callbacks.History` of seed ``seeds[i]`` (its
    ``seconds`` is the whole batched run's time, shared by all seeds). ``params`` holds the
    final parameters and buffers stacked along a first axis of length ``len(seeds)``;
    :meth:`params_of` gives one seed's as a dict ``functional_call`` takes.
    """

    seeds: list
    histories: list
    params: Params
    seconds: float

    def params_of(self, i: int) -> Params:
        """The final parameters (and buffers) of the ``i``-th seed (index into ``seeds``)."""
        return {name: value[i] for name, value in self.params.items()}

    def final(self, metric: str) -> np.ndarray:
        """The last evaluated value of ``metric`` (a per-epoch field of ``History`` such as
        ``"test_accuracy"``) for every seed, in the order of ``seeds``; NaN for a seed with none."""
        if metric not in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            raise ValueError(f"metric={metric!r} is not known; choose one of: train_loss, train_accuracy, test_loss, test_accuracy")
        return np.array([getattr(h, metric)[-1] if getattr(h, metric) else math.nan for h in self.histories])


def _check(dataset, seeds, lr, batch_size, epochs, weight_decay, diverge_factor) -> tuple[list, int]:
    """Validate the arguments of :func:`train_seeds`; return the seeds as a list and the batch size as an int."""
    check_dataset(dataset)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
        raise ValueError(f"seeds must be a non-empty sequence of ints, e.g. range(10), got seeds={seeds!r}")
    seeds = list(seeds)
    for i, seed in enumerate(seeds):
        check_seed(seed, f"seeds[{i}]")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct (a repeated seed is the same run twice), got seeds={seeds!r}")
    check_lr(lr)
    batch_size = check_batch_size(batch_size, dataset)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive int, got epochs={epochs!r}")
    check_weight_decay(weight_decay)
    check_diverge_factor(diverge_factor)
    return seeds, batch_size


def train_seeds(
    arch: str,
    dataset: Dataset,
    seeds: Sequence[int],
    *,
    lr: float,
    batch_size: int | str,
    epochs: int,
    weight_decay: float = 0.0,
    evaluate: bool = True,
    diverge_factor: float | None = 100.0,
    **model_options,
) -> SeedsResult:
    """Train ``make_model(arch, dataset, seed=s, **model_options)`` for every ``s`` in ``seeds`` at once.

    Plain SGD at the constant rate ``lr`` (momentum 0, optional L2 ``weight_decay``),
    ``epochs`` passes over the training set in mini-batches of ``batch_size`` examples
    (``"full"``: gradient descent), every seed with its own data order; see the module
    docstring for how this matches ``sgdlab.train(..., seed=s)``. ``evaluate`` records the
    full training-set and test loss and accuracy after every epoch (eval mode).
    ``diverge_factor`` is :func:`sgdlab.train`'s. Returns a :class:`SeedsResult`.
    Memory: ``len(seeds)`` copies of the model and of its activations on one batch, and,
    while evaluating, every seed's logits on the training set.
    """
    seeds, batch_size = _check(dataset, seeds, lr, batch_size, epochs, weight_decay, diverge_factor)
    device, n = dataset.device, dataset.n_train
    models = [make_model(arch, dataset, seed=s, **model_options).to(device) for s in seeds]
    model = models[0]  # the structure every seed shares; its own tensors are never used
    with torch.no_grad():
        out = model.eval()(dataset.x_train[:2])
    if out.shape != (2, dataset.num_classes):
        raise ValueError(f"arch={arch!r} gives {tuple(out.shape[1:])} outputs per example; dataset {dataset.name!r} has {dataset.num_classes} classes")
    # name -> (seeds, *shape); the weights are leaves of the autograd graph, the buffers are not
    weights = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_()
               for name, _ in model.named_parameters()}
    buffers = {name: torch.stack([dict(m.named_buffers())[name] for m in models]) for name, _ in model.named_buffers()}
    weight_list = list(weights.values())
    per_epoch = steps_per_epoch(n, batch_size)
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    histories = [History(config=dict(dataset=dataset.name, lr=lr, batch_size=batch_size, epochs=epochs, steps=None,
                                     optimizer="sgd", momentum=0.0, weight_decay=weight_decay, schedule=None, seed=s,
                                     model=type(model).__name__),
                         steps_per_epoch=per_epoch) for s in seeds]

    def seed_logits(w, b, x):
        # tie_weights=False: make_model's networks share no tensor between two names, and
        # checking for ties on every call costs as much as a small layer
        return functional_call(model, (w, b), (x,), tie_weights=False)

    batched_logits = vmap(seed_logits)  # (seeds, B, ...) -> (seeds, B, classes): a batch per seed
    shared_logits = vmap(seed_logits, in_dims=(0, 0, None))  # (B, ...) -> (seeds, B, classes): one batch for all
    started = time.perf_counter()
    alive = [True] * len(seeds)
    keep = None  # once a seed has stopped: (seeds,) bool tensor, True for the seeds still training
    step_index = 0
    for epoch in range(epochs):
        model.train()
        shuffle = batch_size < n
        orders = torch.stack([torch.randperm(n, generator=g, device=device) if shuffle else torch.arange(n, device=device)
                              for g in generators])                                   # (seeds, n)
        for start in range(0, n, batch_size):
            index = orders[:, start:start + batch_size]                               # (seeds, B)
            x = dataset.x_train.index_select(0, index.flatten()).view(*index.shape, *dataset.input_shape)  # (seeds, B, ...)
            y = dataset.y_train.index_select(0, index.flatten()).view(index.shape)    # (seeds, B)
            if dataset.augmentation is not None:
                x = torch.stack([dataset.augmentation(xs, g) for xs, g in zip(x, generators)])
            saved = {name: b.clone() for name, b in buffers.items()} if buffers and keep is not None else None
            logits = batched_logits(weights, buffers, x)                              # (seeds, B, classes)
            # per-seed mean cross-entropy over the batch, (seeds,); classes on axis 1, where
            # log_softmax is faster than on a last axis of a few classes
            loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
            grads = torch.autograd.grad(loss.sum(), weight_list)
            losses = loss.tolist()
            first = [h.step_loss[0] if h.step_loss else None for h in histories]
            stopped = [i for i in range(len(seeds)) if alive[i] and has_diverged(losses[i], first[i], diverge_factor)]
            for i in stopped:
                alive[i] = False
                mark_diverged(histories[i], loss=losses[i], step=step_index, epoch=epoch, lr=lr, factor=diverge_factor,
                              first_loss=first[i], warn=True)
            if stopped:
                keep = torch.tensor(alive, device=device)
            for i in range(len(seeds)):
                if alive[i]:
                    histories[i].step_loss.append(losses[i])
            with torch.no_grad():
                if weight_decay:
                    grads = torch._foreach_add(grads, weight_list, alpha=weight_decay)
                if keep is None:
                    torch._foreach_add_(weight_list, grads, alpha=-lr)  # torch.optim.SGD: w - lr * (g + wd * w)
                else:
                    for w, g in zip(weight_list, grads):
                        w.copy_(torch.where(_per_seed(keep, w), w - lr * g, w))
                    if saved is not None:  # a stopped seed's BatchNorm statistics stay as they were
                        for name, b in buffers.items():
                            b.copy_(torch.where(_per_seed(keep, b), b, saved[name]))
            step_index += 1
            if not any(alive):
                break
        if evaluate and any(alive):
            _evaluate(model, shared_logits, weights, buffers, dataset, histories, alive, float(epoch + 1))
        if not any(alive):
            break
    seconds = time.perf_counter() - started
    for history in histories:
        history.step_lr = [lr] * len(history.step_loss)
        history.seconds = seconds
    params = {**{name: w.detach() for name, w in weights.items()}, **buffers}
    return SeedsResult(seeds=seeds, histories=histories, params=params, seconds=seconds)


def _per_seed(keep: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``keep`` (seeds,) viewed so that it broadcasts against the stacked tensor ``t`` (seeds, ...)."""
    return keep.view(-1, *[1] * (t.dim() - 1))


def _evaluate(model, shared_logits, weights, buffers, dataset, histories, alive, epochs_done: float) -> None:
    """Append every live seed's full training-set and test loss and accuracy (eval mode) to its history."""
    model.eval()
    results = []
    chunk = max(1, EVAL_CHUNK // len(histories))
    with torch.no_grad():
        for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)):
            logits = torch.cat([shared_logits(weights, buffers, x[start:start + chunk])
                                for start in range(0, len(x), chunk)], dim=1)            # (seeds, N, classes)
            loss = F.cross_entropy(logits.transpose(1, 2), y.expand(len(histories), -1), reduction="none")  # (seeds, N)
            correct = logits.argmax(dim=2) == y                                            # (seeds, N)
            results.append((loss.double().mean(1).tolist(), correct.double().mean(1).tolist()))
    model.train()
    (train_loss, train_acc), (test_loss, test_acc) = results
    for i, history in enumerate(histories):
        if alive[i]:
            history.epoch.append(epochs_done)
            history.train_loss.append(train_loss[i])
            history.train_accuracy.append(train_acc[i])
            history.test_loss.append(test_loss[i])
            history.test_accuracy.append(test_acc[i])


def spread_of_group_means(values, n: int) -> np.ndarray:
    """The means of disjoint groups of ``n`` consecutive values (runs of independent seeds).

    ``values`` holds one number per seed; the first ``len(values) // n * n`` are split in
    order into groups of ``n`` and each group averaged (no value is used twice, unlike
    resampling with replacement). Returns the group means, one per group; their standard
    deviation measures the spread of the mean of ``n`` independent runs.

    >>> spread_of_group_means([1.0, 3.0, 2.0, 4.0, 9.0], 2)
    array([2., 3.])
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(values):
        raise ValueError(f"n must be an int in 1..{len(values)} (the number of values), got n={n!r}")
    return values[:len(values) // n * n].reshape(-1, n).mean(axis=1)


def standard_deviation_interval(sigma: float, groups: int, level: float = 0.95) -> tuple[float, float]:
    """Where the sample standard deviation (ddof=1) of ``groups`` normal values of true
    standard deviation ``sigma`` falls with probability ``level``: the central interval
    ``sigma * sqrt(chi2_{groups-1}(q) / (groups - 1))`` for q = (1 -+ level) / 2.

    With few groups the interval is wide: a standard deviation measured from 4 groups can
    be half or 1.5 times the true one.

    >>> [round(x, 3) for x in standard_deviation_interval(1.0, 4)]
    [0.268, 1.765]
    """
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 2:
        raise ValueError(f"groups must be an int of at least 2, got groups={groups!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got level={level!r}")
    low, high = chi2.ppf([(1 - level) / 2, (1 + level) / 2], groups - 1)
    return float(sigma * math.sqrt(low / (groups - 1))), float(sigma * math.sqrt(high / (groups - 1)))


def group_mean_spread(values, ns, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Does the mean of ``n`` seeds spread as ``sigma / sqrt(n)``? For each ``n`` in ``ns``:

    * ``spread[i]``: the standard deviation (ddof=1) of :func:`spread_of_group_means`
      ``(values, n)``, in the units of ``values``;
    * ``band[i]``: the ``level`` interval (:func:`standard_deviation_interval`) such a
      measurement falls in if the mean of ``n`` values has standard deviation
      ``sigma / sqrt(n)``, ``sigma`` the standard deviation (ddof=1) of all ``values``, from
      ``len(values) // n`` groups; shape (len(ns), 2);
    * ``inside[i]``: whether ``spread[i]`` lies in ``band[i]`` (bounds included).

    Each ``n`` needs at least two groups: ``n <= len(values) // 2``.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    sigma = values.std(ddof=1)
    spread = np.array([spread_of_group_means(values, int(n)).std(ddof=1) for n in ns])
    band = np.array([standard_deviation_interval(sigma / np.sqrt(n), len(values) // int(n), level)
                     for n in ns])
    inside = (band[:, 0] <= spread) & (spread <= band[:, 1])
    return spread, band, inside


def pooled_sd(a, b) -> float:
    """The pooled standard deviation of two equally large samples, ``sqrt((var a + var b) / 2)``
    (each variance with ddof=1), in their units: the seed-to-seed spread of one setting."""
    return float(np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2))


def gap_standard_error(a, b) -> float:
    """The standard error of ``mean(a) - mean(b)`` for independent samples,
    ``sqrt(var a / len(a) + var b / len(b))`` (ddof=1), in their units.

    >>> gap_standard_error([0.0, 2.0], [1.0, 1.0])
    1.0
    """
    return float(np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))


def seeds_needed(gap: float, sd: float) -> int:
    """Seeds per setting needed to tell apart two settings whose means differ by ``gap``,
    when one seed's result has standard deviation ``sd`` (the same units as ``gap``).

    A two-sided test at the 5 % level (z = 1.96) with 80 % power (z = 0.84), comparing the
    means of ``n`` seeds of each setting, needs ``n = 2 (1.96 + 0.84)^2 sd^2 / gap^2``,
    rounded up (the normal approximation: a few seeds too few when ``n`` is small).

    >>> seeds_needed(1.0, 1.0)
    16
    """
    if not gap > 0:
        raise ValueError(f"gap must be positive, got gap={gap!r}")
    return int(np.ceil(2 * (1.96 + 0.84) ** 2 * sd ** 2 / gap ** 2))


def variance_ratio(a, b) -> tuple[float, float]:
    """``var(a) / var(b)`` (ddof=1) and the one-sided F-test p-value of the hypothesis that
    ``a``'s true variance is no larger than ``b``'s: small p, ``a`` spreads more. Both samples
    are assumed normal and independent; the ratio has ``(len(a) - 1, len(b) - 1)`` degrees of
    freedom."""
    ratio = float(np.var(a, ddof=1) / np.var(b, ddof=1))
    return ratio, float(f_distribution.sf(ratio, len(a) - 1, len(b) - 1))


def train_one_by_one(arch: str, dataset, seeds, **options) -> list[History]:
    """One :func:`sgdlab.train` run per seed, one after the other, each from
    ``make_model(arch, dataset, seed=s)`` with ``train(..., seed=s, **options)``: what
    :func:`train_seeds` reproduces. Returns their histories, in the order of ``seeds``."""
    return [train(make_model(arch, dataset, seed=s), dataset, seed=s, **options) for s in seeds]


def largest_differences(histories_a, histories_b) -> tuple[float, float]:
    """How far two lists of runs of the same seeds differ, pair by pair: the largest absolute
    difference of the final training loss (nats), and of the test accuracy at any
    evaluation (a fraction)."""
    pairs = list(zip(histories_a, histories_b, strict=True))
    loss = max(abs(a.train_loss[-1] - b.train_loss[-1]) for a, b in pairs)
    accuracy = max(abs(x - y) for a, b in pairs for x, y in zip(a.test_accuracy, b.test_accuracy))
    return loss, accuracy


def nudge_up_one_ulp(model: torch.nn.Module) -> torch.nn.Module:
    """Moves every trainable weight of ``model`` one unit in the last place up (towards +inf),
    in place, and returns ``model``: what rounding alone does to a run."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
    return model

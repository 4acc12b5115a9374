"""One function per kind of figure in the book.

Every function draws on a Matplotlib ``Axes`` it is given (or makes a new figure), labels
both axes with their units, and returns the axes, so that a notebook can add to it.
Nothing here computes results: plots take result objects (``History``, ...) and draw them.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .train import History


def _axes(ax=None, *, ncols: int = 1, figsize=(6.4, 4.0)):
    if ax is not None:
        return ax
    _, ax = plt.subplots(1, ncols, figsize=figsize, layout="constrained")
    return ax


def plot_history(history: History, axes=None, *, label: str | None = None, color=None):
    """Loss against epochs (left) and accuracy against epochs (right) of one run.

    The left panel shows the mini-batch loss of every step, faint, and the full training-set
    and test losses after each epoch; the right panel the training and test accuracy in %.
    A diverged run is marked where it stopped. Returns the two axes.
    """
    loss_ax, acc_ax = _axes(axes, ncols=2, figsize=(11, 4))
    per_epoch = history.steps_per_epoch
    step_epochs = (np.arange(history.steps) + 1) / per_epoch
    name = f"{label}: " if label else ""
    lines = loss_ax.plot(step_epochs, history.step_loss, alpha=0.25, lw=0.8, color=color,
                         label=f"{name}mini-batch loss")
    color = lines[0].get_color()
    if history.epoch:
        loss_ax.plot(history.epoch, history.train_loss, "-o", ms=3, color=color, label=f"{name}training set")
        loss_ax.plot(history.epoch, history.test_loss, "--s", ms=3, color=color, label=f"{name}test set")
        acc_ax.plot(history.epoch, 100 * np.asarray(history.train_accuracy), "-o", ms=3, color=color, label=f"{name}training set")
        acc_ax.plot(history.epoch, 100 * np.asarray(history.test_accuracy), "--s", ms=3, color=color, label=f"{name}test set")
    if history.diverged:
        where = (history.diverged_at + 1) / per_epoch
        loss_ax.axvline(where, color=color, ls=":", lw=1)
        loss_ax.annotate(f"{name}diverged", (where, 0.95), xycoords=("data", "axes fraction"),
                         rotation=90, va="top", ha="right", color=color, fontsize=8)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss (nats)", yscale="log", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return loss_ax, acc_ax


def plot_learning_rate(histories: Sequence[History], labels: Sequence[str], ax=None):
    """The learning rate of each run against epochs (its schedule, as it was applied)."""
    ax = _axes(ax)
    for history, label in zip(histories, labels):
        ax.plot((np.arange(history.steps) + 1) / history.steps_per_epoch, history.step_lr, label=label)
    ax.set(xlabel="epoch", ylabel="learning rate", title="learning-rate schedule")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_walk(result, epoch: int | None, *, first: int = 0, count: int = 40, ax=None, color="C0"):
    """The full-set loss along ``count`` consecutive steps of one recorded epoch ("A Walk with SGD", Figure 1 kind).

    The x-axis counts iterations: between iteration t and t + 1 lie the interpolated points
    ``t + alpha``; grey vertical lines mark the iterates. The dashed orange line joins
    each segment's lowest point: the valley floor. ``epoch=None`` takes all recorded steps
    in order (full-batch descent records one step per epoch).
    """
    ax = _axes(ax, figsize=(10, 3.2))
    steps, curves = result.segments(epoch)
    steps, curves = steps[first:first + count], curves[first:first + count]
    for t, curve in zip(steps, curves):
        ax.plot(t + result.alphas, curve, color=color, lw=1.2)
        ax.axvline(t, color="0.85", lw=0.6, zorder=0)
    position, floor = result.valley_floor(epoch)
    ax.plot(position[first:first + count], floor[first:first + count], "--", color="C1", lw=1.2, label="valley floor (lowest point of each segment)")
    ax.set(xlabel="iteration (global step; interpolated points between iterates)", ylabel="full training-set loss (nats)",
           title=f"{'epoch ' + str(epoch) if epoch else 'all recorded steps'}: loss between consecutive iterates, steps {steps[0]}-{steps[-1] + 1}")
    ax.legend(fontsize=8, loc="upper right")
    return ax


def plot_barriers_per_epoch(results: dict, ax=None, *, tol: float = 0.0):
    """Barriers crossed per recorded epoch ("A Walk with SGD", Figure 4 kind), one bar group per run.

    ``results`` maps a label to a ``WalkResult``; each bar is labelled with the share of
    that epoch's steps.
    """
    ax = _axes(ax, figsize=(8, 3.5))
    width = 0.8 / max(1, len(results))
    for i, (label, result) in enumerate(results.items()):
        rows = result.census(tol)
        x = np.arange(len(rows)) + i * width
        bars = ax.bar(x, [r["barriers"] for r in rows], width, label=label)
        ax.bar_label(bars, [f"{r['barriers']}/{r['steps']}" for r in rows], fontsize=7)
        ax.set_xticks(np.arange(len(rows)) + width * (len(results) - 1) / 2, [str(r["epoch"]) for r in rows])
    ax.set(xlabel="epoch", ylabel="barriers crossed (steps)", title="barriers crossed per recorded epoch")
    ax.legend(fontsize=8)
    return ax


def census_table(result, *, tol: float = 0.0, caption: str = ""):
    """The census ("A Walk with SGD", Table 1 kind) as a Markdown table for a notebook."""
    from IPython.display import Markdown

    lines = [caption, "",
             "| epoch | steps | barriers crossed | largest barrier / loss | steps with a valley inside | floor rises | floor falls | mean loss (nats) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result.census(tol):
        lines.append(f"| {r['epoch']} | {r['steps']} | {r['barriers']} | {r['max_relative_height']:.2%} | "
                     f"{r['interior_minimum']:.0%} | {r['floor_rises']} | {r['floor_falls']} | {r['mean_loss']:.3f} |")
    return Markdown("\n".join(lines))


def plot_alignment(alignments: dict, ax=None):
    """Gradient-Hessian alignment ``g_B^T H g_B / ||g_B||^2`` against the batch size.

    ``alignments`` maps a label (e.g. "after 100 steps") to a dict batch size -> the values
    over the sampled batches (from :func:`sgdlab.curvature.alignment`); each label is one
    line of means with error bars of one standard deviation. The x axis is logarithmic.
    """
    ax = _axes(ax)
    for i, (label, by_size) in enumerate(alignments.items()):
        sizes = np.asarray(list(by_size), dtype=float)
        values = [np.asarray(v, dtype=float) for v in by_size.values()]
        shift = 1 + 0.04 * (i - (len(alignments) - 1) / 2)  # keep error bars apart
        ax.errorbar(sizes * shift, [v.mean() for v in values], yerr=[v.std() for v in values],
                    fmt="-o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("mini-batch size B (examples)")
    ax.set_ylabel(r"$g_B^\top H g_B / \|g_B\|^2$ (nats per unit$^2$)")
    ax.legend(fontsize=8)
    return ax


def plot_gradient_cosine(recorders: dict, ax=None, *, window: int = 25):
    """Cosine of consecutive mini-batch gradients against iterations, one line per label.

    ``recorders`` maps a label to a :class:`~sgdlab.curvature.GradientCosineRecorder`; each
    line is a running mean over ``window`` steps (the raw values are too noisy to read).
    """
    ax = _axes(ax)
    for label, recorder in recorders.items():
        steps, cosines = recorder.steps, recorder.cosines
        w = max(1, min(window, len(cosines)))
        smooth = np.convolve(cosines, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:] + 1, smooth, label=f"{label} (mean {np.nanmean(cosines):+.2f})")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("iteration (updates)")
    ax.set_ylabel(rf"cos$(g_{{t-1}}, g_t)$, running mean over {window} steps")
    ax.legend(fontsize=8)
    return ax


def plot_distance_from_init(recorders: dict, fits: dict | None = None, ax=None):
    """``||w_t - w_0||`` against iterations on a logarithmic axis, one line per label.

    ``recorders`` maps a label to a :class:`~sgdlab.trajectory.DistanceFromInitRecorder`;
    ``fits`` optionally maps the same labels to a list of :class:`~sgdlab.trajectory.LawFit`,
    drawn dashed with their formula and R².
    """
    ax = _axes(ax)
    for label, recorder in recorders.items():
        line, = ax.plot(recorder.iterations, recorder.distances, label=label)
        for fit, style in zip((fits or {}).get(label, ()), ("--", ":")):
            ax.plot(recorder.iterations, fit(recorder.iterations), style, color=line.get_color(), lw=1, label=f"  {fit}")
    ax.set_xscale("log")
    ax.set_xlabel("iteration t (updates, log scale)")
    ax.set_ylabel(r"$\|w_t - w_0\|$ (parameter units)")
    ax.legend(fontsize=7)
    return ax


def plot_sharpness(recorder, lr: float, ax=None, *, label: str | None = None):
    """The top Hessian eigenvalue through training, with the stability limit ``2 / lr`` of gradient descent.

    ``recorder`` is a :class:`~sgdlab.curvature.TopEigenvalueRecorder`.
    """
    ax = _axes(ax)
    ax.plot(recorder.iterations, recorder.values, "-o", ms=3, label=label or "top eigenvalue of H")
    ax.axhline(2 / lr, color="C3", ls="--", label=f"2 / lr = {2 / lr:g}")
    ax.set_xlabel("iteration (updates)")
    ax.set_ylabel(r"$\lambda_{max}(H)$ (nats per unit$^2$)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return ax


def plot_drift(trajectories: dict, fits: dict | None = None, ax=None):
    """d(w_N, w_{N+k}) against k on log-log axes, one line per label.

    ``trajectories`` maps a label to a pair ``(k, distances)`` (updates since w_N, parameter
    units; k > 0); ``fits`` optionally maps labels to a power-law
    :class:`~sgdlab.trajectory.LawFit`, drawn dashed with its exponent.
    """
    ax = _axes(ax)
    for label, (k, d) in trajectories.items():
        line, = ax.loglog(k, d, label=label)
        if fits and label in fits:
            ax.loglog(k, fits[label](k), "--", color=line.get_color(), lw=1,
                      label=f"  fit: exponent {fits[label].coefficients[1]:.2f}")
    ax.set_xlabel("M - N (updates after w_N, log scale)")
    ax.set_ylabel(r"$\|w_M - w_N\|$ (parameter units, log scale)")
    ax.legend(fontsize=8)
    return ax


def plot_distance_scale(distances: dict, ax=None):
    """Horizontal bars of distances on a logarithmic axis, to put one distance on the scale of others.

    ``distances`` maps a label to a distance or to a sequence of distances (drawn as its
    mean with the range as an error bar).
    """
    ax = _axes(ax, figsize=(7, 0.45 * len(distances) + 1))
    labels = list(distances)
    values = [np.atleast_1d(np.asarray(v, dtype=float)) for v in distances.values()]
    means = np.array([v.mean() for v in values])
    spread = np.array([[v.mean() - v.min() for v in values], [v.max() - v.mean() for v in values]])
    ax.barh(range(len(labels)), means, xerr=spread, color=[f"C{i}" for i in range(len(labels))], capsize=3)
    for i, m in enumerate(means):
        ax.text(m * 1.05, i, f"{m:.3g}", va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("Euclidean distance (parameter units, log scale)")
    return ax


def plot_lmc(curves: dict, ax=None):
    """The loss along straight lines between networks: ``curves`` maps a label to an
    :class:`~sgdlab.landscape.LMCBarrier` (its ``alphas`` and ``curve``)."""
    ax = _axes(ax)
    for label, barrier in curves.items():
        ax.plot(barrier.alphas, barrier.curve, "-o", ms=3,
                label=f"{label} (barrier {barrier.above_line:.3f} nats above the line)")
    ax.set_xlabel(r"$\alpha$: $(1-\alpha)\,w_a + \alpha\, w_b$")
    ax.set_ylabel("training loss (nats)")
    ax.legend(fontsize=8)
    return ax

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

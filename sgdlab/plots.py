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

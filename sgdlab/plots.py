"""One function per kind of figure in the book.

Every function draws on a Matplotlib ``Axes`` it is given (or makes a new figure), labels
both axes with their units, and returns the axes, so that a notebook can add to it.
Nothing here computes results: plots take result objects (``History``, ...) and draw them.

:data:`BOOK_STYLE` is how the book draws: every figure at 150 dpi (sharp on high-density
screens), at most :data:`MAX_FIGURE_WIDTH` inches wide, with 11-point text, so that a label
is still at least 10 px on the page (a chapter's output column is about 690 px wide: a
figure of width ``w`` inches is shown at 690 / (150 w) of its size). :func:`figure_png` is how a figure
becomes a picture on the page, for the chapters' figures and the static sweeps' frames alike.

The module is longer than the others because it holds one function per kind of figure the
book draws (about twenty, each short); they share the style and the axes helpers, so they
are kept together rather than spread over the modules that compute what they draw.
"""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from PIL import Image

from .callbacks import History

#: Inches: a wider figure is shrunk on the page until its labels are too small to read.
MAX_FIGURE_WIDTH = 10.0
#: The Matplotlib settings of every figure in the book (:func:`use_book_style`).
BOOK_STYLE = {
    "figure.dpi": 150,            # the inline backend draws at the figure's dpi
    "savefig.dpi": 150,
    "savefig.bbox": "tight",      # no clipped titles or tick labels in saved frames
    "font.size": 11,
    "axes.titlesize": "medium",
    "figure.figsize": (6.4, 4.0),
}


#: Colours of a figure's palette PNG: a third of the bytes of a full-colour one; plots look the same.
PNG_COLOURS = 256


def figure_png(fig: Figure, dpi: float | None = None) -> bytes:
    """``fig`` as the PNG a page shows: cropped to what was drawn, at ``dpi`` (default: the
    figure's own), reduced to a palette of :data:`PNG_COLOURS` colours, resolution recorded."""
    dpi = dpi or fig.dpi
    drawn = io.BytesIO()
    fig.savefig(drawn, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    image = Image.open(drawn).convert("RGB").quantize(colors=PNG_COLOURS, method=Image.Quantize.MEDIANCUT)
    page = io.BytesIO()
    image.save(page, format="png", optimize=True, dpi=(dpi, dpi))
    return page.getvalue()


def use_book_style() -> None:
    """Draw every following figure in :data:`BOOK_STYLE` (chapters call it in their set-up).

    In IPython (Jupyter, Colab, the book's build) figures are also shown as :func:`figure_png`
    makes them.
    """
    plt.rcParams.update(BOOK_STYLE)
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        # the inline backend registers its own PNG formatter when pyplot first loads it: load it
        # now (a figure made and closed), then register ours over it
        plt.close(plt.figure())
        shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


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
    loss_ax, acc_ax = _axes(axes, ncols=2, figsize=(10, 3.8))
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
                         rotation=90, va="top", ha="right", color=color, fontsize="small")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss (nats)", yscale="log", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return loss_ax, acc_ax


def plot_learning_rate(histories: Sequence[History], labels: Sequence[str], ax=None):
    """The learning rate of each run against epochs (its schedule, as it was applied)."""
    ax = _axes(ax)
    for history, label in zip(histories, labels):
        ax.plot((np.arange(history.steps) + 1) / history.steps_per_epoch, history.step_lr, label=label)
    ax.set(xlabel="epoch", ylabel="learning rate", title="learning-rate schedule")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
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
    ax.legend(fontsize="small", loc="upper right")
    return ax


def plot_census_shares(result, ax=None, *, tol: float = 0.0, title: str | None = None):
    """One walk's census per recorded epoch as bars: the share of the epoch's steps that cross a
    barrier and the share with a valley inside ("A Walk with SGD", Table 1 and Figure 4), with
    the paper's statement (a valley inside every step) as a dotted line at 1.

    ``result`` is a ``WalkResult``; each bar is labelled with its share.
    """
    ax = _axes(ax, figsize=(5, 3.2))
    rows = result.census(tol)
    x = np.arange(len(rows))
    for shift, name, values in ((-0.2, "barriers crossed", [r["barriers"] / r["steps"] for r in rows]),
                                (0.2, "valley inside", [r["interior_minimum"] for r in rows])):
        bars = ax.bar(x + shift, values, 0.4, label=name)
        ax.bar_label(bars, [f"{v:.0%}" for v in values], fontsize="small")
    ax.axhline(1, color="0.3", ls=":", lw=1, label="the paper: a valley inside every step")
    ax.set_xticks(x, [str(r["epoch"]) for r in rows])
    ax.set(xlabel="recorded epoch", ylabel="share of the epoch's steps", ylim=(0, 1.3), title=title)
    ax.legend(fontsize="small", loc="upper left", ncols=2)
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


def markdown_table(rows: list[dict], columns: dict, caption: str = ""):
    """``rows`` as a Markdown table for a notebook: ``columns`` maps a row key to ``(header, format)``."""
    from IPython.display import Markdown

    lines = [caption, "", "| " + " | ".join(h for h, _ in columns.values()) + " |",
             "|" + "---:|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format(row[k], f) for k, (_, f) in columns.items()) + " |")
    return Markdown("\n".join(lines))


def plot_alignment(alignments: dict, ax=None):
    """Gradient-Hessian alignment ``g_B^T H g_B / ||g_B||^2`` against the batch size.

    ``alignments`` maps a label (e.g. "after 100 steps") to a dict batch size -> the values
    over the sampled batches (from :func:`sgdlab.hessian.alignment`); each label is one
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
    ax.legend(fontsize="small")
    return ax


def plot_gradient_cosine(recorders: dict, ax=None, *, window: int = 25):
    """Cosine of consecutive mini-batch gradients against iterations, one line per label.

    ``recorders`` maps a label to a :class:`~sgdlab.recorders.GradientCosineRecorder`; each
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
    ax.legend(fontsize="small")
    return ax


def plot_distance_from_init(recorders: dict, fits: dict | None = None, ax=None):
    """``||w_t - w_0||`` against iterations on a logarithmic axis, one line per label.

    ``recorders`` maps a label to a :class:`~sgdlab.recorders.DistanceFromInitRecorder`;
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
    ax.legend(fontsize="small")
    return ax


def plot_sharpness(recorder, lr: float, ax=None, *, label: str | None = None):
    """The top Hessian eigenvalue through training, with the stability limit ``2 / lr`` of gradient descent.

    ``recorder`` is a :class:`~sgdlab.recorders.TopEigenvalueRecorder`.
    """
    ax = _axes(ax)
    ax.plot(recorder.iterations, recorder.values, "-o", ms=3, label=label or "top eigenvalue of H")
    ax.axhline(2 / lr, color="C3", ls="--", label=f"2 / lr = {2 / lr:g}")
    ax.set_xlabel("iteration (updates)")
    ax.set_ylabel(r"$\lambda_{max}(H)$ (nats per unit$^2$)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
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
    ax.legend(fontsize="small")
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
    for i, (m, v) in enumerate(zip(means, values)):
        ax.text(v.max() * 1.05, i, f"{m:.3g}", va="center", fontsize="small")  # right of the error bar
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xscale("log")
    # ticks at 1, 2 and 5 of each decade, labelled plainly; the minor ticks unlabelled (over
    # less than a decade matplotlib labels them too, and they overlap)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(min(v.min() for v in values) / 2, max(v.max() for v in values) * 1.6)  # room for the values
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
    ax.legend(fontsize="small")
    return ax


def plot_toy_1d(x, curves: dict, ax=None, *, points: dict | None = None):
    """1-D toy losses against x: ``curves`` maps a label to values on the grid ``x`` (e.g. the
    loss and its smoothed versions, :func:`sgdlab.toy.smoothed`); ``points`` optionally maps a
    label to a pair ``(positions, values)`` drawn as markers (starts, end points)."""
    ax = _axes(ax)
    x = np.asarray(x, dtype=float)
    for label, values in curves.items():
        ax.plot(x, np.asarray(values, dtype=float), label=label)
    for i, (label, (where, values)) in enumerate((points or {}).items()):
        ax.plot(np.asarray(where, dtype=float), np.asarray(values, dtype=float), "o", ms=4, label=label,
                color=f"C{len(curves) + i}", alpha=0.8)
    ax.set_xlabel("x (parameter units)")
    ax.set_ylabel("loss f(x) (loss units)")
    ax.legend(fontsize="small")
    return ax


def plot_toy_paths(axes, values, paths: dict, ax=None, *, levels: int = 30, max_paths: int = 50):
    """Paths on a 2-D toy loss: filled contours of ``values`` (indexed ``[i, j]`` =
    ``(axes[0][i], axes[1][j])``, as :meth:`sgdlab.toy.ToyLoss.on_grid`) and, per label of
    ``paths``, the paths of shape ``(points, starts, 2)`` as lines (at most ``max_paths``
    starts each), a circle at each start and a dot at each end. ``values=None`` draws the
    paths alone (e.g. projections of a network's weights)."""
    ax = _axes(ax, figsize=(6, 5))
    if values is not None:
        gx, gy = (np.asarray(a, dtype=float) for a in axes)
        filled = ax.contourf(gx, gy, np.asarray(values, dtype=float).T, levels=levels, cmap="viridis")
        plt.colorbar(filled, ax=ax, label="loss (loss units)")
    for i, (label, path) in enumerate(paths.items()):
        path = np.asarray(path, dtype=float)[:, :max_paths]
        color = f"C{(i + 1) % 10}"
        ax.plot(path[:, :, 0], path[:, :, 1], color=color, lw=0.9, alpha=0.8)
        ax.plot(path[0, :, 0], path[0, :, 1], "o", mfc="none", color=color, ms=5)
        ax.plot(path[-1, :, 0], path[-1, :, 1], ".", color=color, ms=8, label=label)
    ax.set_xlabel("x\u2081 (parameter units)")
    ax.set_ylabel("x\u2082 (parameter units)")
    ax.legend(fontsize="small", loc="upper right")
    return ax


def plot_success_map(lrs, noises, shares, ax=None, *, title: str = "", label: str = "runs that reach the target (%)"):
    """A heat map of ``shares[i, j]`` (a fraction, shown in %; ``label`` names it on the colour bar) for step size ``lrs[i]``
    (rows, y axis) and gradient-noise level ``noises[j]`` (columns, x axis), each cell labelled."""
    ax = _axes(ax, figsize=(7, 5))
    shares = 100 * np.asarray(shares, dtype=float)
    image = ax.imshow(shares, origin="lower", cmap="magma", vmin=0, vmax=100, aspect="auto")
    plt.colorbar(image, ax=ax, label=label)
    for i in range(shares.shape[0]):
        for j in range(shares.shape[1]):
            ax.text(j, i, f"{shares[i, j]:.0f}", ha="center", va="center", fontsize="small",
                    color="black" if shares[i, j] > 55 else "white")
    ax.set_xticks(range(len(noises)), [f"{n:g}" for n in noises])
    ax.set_yticks(range(len(lrs)), [f"{lr:.3g}" for lr in lrs])
    ax.set_xlabel("gradient-noise standard deviation \u03c3 (gradient units)")
    ax.set_ylabel("step size \u03b7 (learning rate)")
    if title:
        ax.set_title(title)
    return ax


def plot_gradient_variance(batch_sizes, variances: dict, ax=None, *, references: dict | None = None):
    """Variance of the mini-batch gradient against the batch size on log-log axes.

    ``variances`` maps a label to measured values, one per batch size (squared gradient
    units: ``E ||g_B - g||^2``); ``references`` maps a label to predicted values, drawn dashed.
    """
    ax = _axes(ax)
    sizes = np.asarray(batch_sizes, dtype=float)
    for label, values in variances.items():
        ax.loglog(sizes, np.asarray(values, dtype=float), "o-", label=label)
    for label, values in (references or {}).items():
        ax.loglog(sizes, np.asarray(values, dtype=float), "--", lw=1, label=label)
    ax.set_xlabel("mini-batch size B (examples, log scale)")
    ax.set_ylabel(r"$E\,\|g_B - g\|^2$ (squared gradient units, log scale)")
    ax.legend(fontsize="small")
    return ax


def plot_lr_sweep(histories: dict, ax=None):
    """Full training-set loss after every epoch for runs at different learning rates, one line per label.

    ``histories`` maps a label (e.g. "lr 0.1") to a :class:`~sgdlab.callbacks.History`. A diverged run is never
    drawn as NaN: its line ends at its last evaluation (or starts nowhere) and an ``x``
    marks the divergence point, at the step where it stopped and the last finite mini-batch
    loss, labelled with that step.
    """
    ax = _axes(ax)
    for label, history in histories.items():
        epochs = [0.0] + list(history.epoch)
        losses = history.step_loss[:1] + list(history.train_loss)  # epoch 0: the first mini-batch loss
        line, = ax.plot(epochs, losses, "-o", ms=3, label=label)
        if history.diverged:
            where = history.diverged_at / history.steps_per_epoch
            last = history.step_loss[-1] if history.step_loss else float("nan")
            ax.plot([where], [last], "x", ms=10, mew=2, color=line.get_color())
            ax.annotate(f"{label}: diverged at step {history.diverged_at}", (where, last), textcoords="offset points",
                        xytext=(8, 4), fontsize="small", color=line.get_color())
    ax.set(xlabel="epoch", ylabel="full training-set loss (nats, log scale)", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_seed_spread(values: dict, ax=None, *, ylabel: str = "test error (%)"):
    """One column of dots per label, a dot per seed, with the mean and one standard deviation.

    ``values`` maps a label to the per-seed numbers (already in the unit ``ylabel`` names).
    The dots are spread sideways only to be seen; the bar is mean ± standard deviation
    (ddof = 1).
    """
    ax = _axes(ax, figsize=(5.5, 4))
    rng = np.random.default_rng(0)
    for i, (label, v) in enumerate(values.items()):
        v = np.asarray(v, dtype=float)
        ax.plot(i + rng.uniform(-0.12, 0.12, len(v)), v, "o", alpha=0.7, color=f"C{i}")
        sd = v.std(ddof=1) if len(v) > 1 else 0.0
        ax.errorbar(i + 0.3, v.mean(), yerr=sd, fmt="s", color="k", capsize=4,
                    label="mean ± 1 standard deviation" if i == 0 else None)
    ax.set_xticks(range(len(values)), list(values))
    ax.set_xlim(-0.5, len(values) - 0.3)
    ax.set(xlabel="setting (one dot per seed)", ylabel=ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    return ax


def _running_mean(values, window: int) -> np.ndarray:
    """Mean of the ``window`` values centred on each value (fewer at the ends; NaNs ignored): no lag at a drop."""
    values = np.asarray(values, dtype=np.float64)
    window = max(1, min(int(window), len(values)))
    finite = np.isfinite(values)
    sums = np.convolve(np.where(finite, values, 0.0), np.ones(window), "same")
    counts = np.convolve(finite.astype(np.float64), np.ones(window), "same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


STABILITY_QUANTITIES = {
    "activation": ("activation drift per step (relative, log scale)", True),
    "gradient": ("probe-gradient drift per step (relative, log scale)", True),
    "loss": ("probe-loss change per step (nats, log scale)", True),
    "cosine": ("cosine of consecutive gradients (no unit)", False),
}


def _stability_values(result, quantity: str) -> np.ndarray:
    return {"activation": result.mean_activation_drift, "gradient": lambda: result.gradient_drift,
            "loss": lambda: result.loss_change, "cosine": lambda: result.gradient_cosine}[quantity]()


def plot_stability(results: dict, quantity: str = "activation", ax=None, *, window: int = 20, drops: dict | None = None):
    """One drift quantity per step against epochs, for several runs (``sgdlab.stability.StabilityResult``).

    ``results`` maps a label to a result; ``quantity`` is ``activation`` (mean over layers),
    ``gradient``, ``loss`` or ``cosine`` (see ``sgdlab.stability``); relative drifts are
    ``||v_t - v_(t-1)|| / ||v_(t-1)||``. Each curve is a running mean over ``window`` steps
    centred on each step (the raw values, faint, behind it). ``drops`` maps a label to
    the steps where that run's rate fell: dashed vertical lines in the run's colour.
    """
    if quantity not in STABILITY_QUANTITIES:
        raise ValueError(f"quantity {quantity!r} is not known; choose one of: {', '.join(STABILITY_QUANTITIES)}")
    ylabel, log = STABILITY_QUANTITIES[quantity]
    ax = _axes(ax, figsize=(7, 4))
    for label, result in results.items():
        values = _stability_values(result, quantity)
        raw = ax.plot(result.epoch, values, lw=0.5, alpha=0.2)
        color = raw[0].get_color()
        ax.plot(result.epoch, _running_mean(values, window), color=color, lw=1.6, label=label)
        for step in (drops or {}).get(label, ()):
            ax.axvline(result.epoch[step], color=color, ls="--", lw=1)
    ax.set(xlabel="epoch", ylabel=ylabel, yscale="log" if log else "linear")
    if quantity == "cosine":
        ax.axhline(0, color="0.6", lw=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_layer_drift(result, ax=None, *, window: int = 20, drops=()):
    """Activation drift per step, ``||a_t - a_(t-1)|| / ||a_(t-1)||``, of every recorded layer of one run,
    against epochs (centred running means over ``window`` steps, log scale); ``drops`` (steps) are
    marked by dashed lines."""
    ax = _axes(ax, figsize=(7, 4))
    for name, values in result.activation_drift.items():
        ax.plot(result.epoch, _running_mean(values, window), lw=1.4, label=name)
    for step in drops:
        ax.axvline(result.epoch[step], color="0.4", ls="--", lw=1)
    ax.set(xlabel="epoch", ylabel="activation drift per step (relative, log scale)", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", title="layer")
    return ax


def plot_drift_against_rate(results: dict, ax=None, *, fits: dict | None = None):
    """Mean activation drift per step against the learning rate of that step (log-log), one scatter per run.

    ``fits`` maps a label to ``(slope, intercept)`` of ``log10 drift = slope * log10 lr + intercept``,
    drawn as a line over the run's rates.
    """
    ax = _axes(ax, figsize=(6.4, 4.2))
    for label, result in results.items():
        points = ax.scatter(result.lr, result.mean_activation_drift(), s=3, alpha=0.35, label=label)
        if fits and label in fits:
            slope, intercept = fits[label]
            rates = np.geomspace(result.lr[result.lr > 0].min(), result.lr.max(), 50)
            ax.plot(rates, 10 ** (slope * np.log10(rates) + intercept), color=points.get_facecolor()[0][:3], lw=1.5,
                    label=f"{label}: drift ~ lr^{slope:.2f}")
    ax.set(xscale="log", yscale="log", xlabel="learning rate of the step (log scale)",
           ylabel="activation drift per step (relative, log scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax

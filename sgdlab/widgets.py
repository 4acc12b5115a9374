"""Widgets on the static page: a widget's figures rendered ahead of time, stepped through with a slider.

A widget (``ipywidgets.interact``) needs a running Python kernel: on the book's static pages
its callback cannot run. :func:`static_sweep` calls the same callback for a short list of
settings while the notebook executes, keeps each figure it draws as a PNG (and what it
prints as a caption), and shows them as one HTML block: a range slider and the frames, one
visible at a time. The slider works with nothing but the page's own inline JavaScript, so it
works in the static book, offline, in Jupyter and on Colab alike.

HTML contract (the browser test relies on it): ``<div class="sgdlab-sweep">`` holds one
``<input type="range" class="sgdlab-sweep-slider">`` and one ``<img class="sgdlab-sweep-frame">``
per setting, every frame but the selected one ``hidden``; each frame's ``data-label`` names its
setting and its ``data-caption`` holds the printed text.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
from typing import Callable, Sequence

import matplotlib.pyplot as plt

from .plots import figure_png

# Shows frame number this.value of the slider's sweep, hides the others, updates label and caption.
_ON_INPUT = (
    "const box = this.closest('.sgdlab-sweep'); const i = Number(this.value);"
    " box.querySelectorAll('.sgdlab-sweep-frame').forEach((f, j) => { f.hidden = j !== i; });"
    " const f = box.querySelectorAll('.sgdlab-sweep-frame')[i];"
    " box.querySelector('.sgdlab-sweep-label').textContent = f.dataset.label;"
    " const caption = box.querySelector('.sgdlab-sweep-caption');"
    " caption.textContent = f.dataset.caption; caption.hidden = !f.dataset.caption;"
)


class StaticSweep:
    """Frames rendered ahead of time; displays as a slider over them (see the module docstring)."""

    def __init__(self, title: str, labels: list[str], pngs: list[bytes], captions: list[str], selected: int = 0):
        self.title, self.labels, self.pngs, self.captions, self.selected = title, labels, pngs, captions, selected

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"<static sweep {self.title!r}: {len(self)} frames ({', '.join(self.labels)})>"

    def _repr_html_(self) -> str:
        e = lambda text: html.escape(text, quote=True)
        frames = "\n".join(
            f'<img class="sgdlab-sweep-frame" style="max-width:100%;display:block" alt="{e(self.title)}: {e(label)}" '
            f'data-label="{e(label)}" data-caption="{e(caption)}"{"" if i == self.selected else " hidden"} '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            for i, (label, png, caption) in enumerate(zip(self.labels, self.pngs, self.captions)))
        caption = self.captions[self.selected]
        # the title, then the slider and its setting on one line above the frames, then the caption
        return (
            f'<div class="sgdlab-sweep" style="border:1px solid #ccc;border-radius:4px;padding:0.5em;margin:0.5em 0">\n'
            f'<div style="font-weight:bold">{e(self.title)}</div>\n'
            f'<div style="margin:0.3em 0"><label>setting <input type="range" class="sgdlab-sweep-slider" min="0" '
            f'max="{len(self) - 1}" step="1" value="{self.selected}" aria-label="{e(self.title)}" '
            f'oninput="{e(_ON_INPUT)}"> <span class="sgdlab-sweep-label">{e(self.labels[self.selected])}</span>'
            f'</label></div>\n'
            f'{frames}\n'
            f'<pre class="sgdlab-sweep-caption" style="white-space:pre-wrap"{"" if caption else " hidden"}>'
            f'{e(caption)}</pre>\n'
            f'</div>'
        )


class SweepNotRendered:
    """What :func:`static_sweep` gives when told not to render: a one-line note in its place."""

    def __init__(self, title: str, frames: int):
        self.title, self.frames = title, frames

    def __repr__(self) -> str:
        return (f"static sweep {self.title!r} ({self.frames} frames) not rendered with this preset: "
                "the widget above runs live here")


def static_sweep(draw: Callable[..., object], settings: Sequence[dict], *, title: str, selected: int = 0,
                 dpi: float | None = None, enabled: bool = True) -> StaticSweep | SweepNotRendered:
    """Call ``draw(**setting)`` for every setting and keep what it draws, for the static page.

    ``draw`` is the widget's own callback: it draws one Matplotlib figure (and may call
    ``plt.show()``, which is held back here) and may print a line, kept as the frame's
    caption. ``settings`` is a list of keyword-argument dicts, one frame each, labelled
    ``"name=value, ..."``; ``selected`` is the frame shown first. ``dpi``: resolution of the
    stored PNGs (each frame is embedded in the page); ``None`` keeps the figure's own, so
    frames are made as the chapter's figures are (:func:`sgdlab.plots.figure_png`). Returns a :class:`StaticSweep`, which
    displays as the slider and its frames. ``enabled=False`` (a preset's ``static_sweeps``,
    off where a GPU runs the widgets live) calls nothing and returns a :class:`SweepNotRendered`.
    """
    if not callable(draw):
        raise ValueError(f"draw must be the widget's callback (a function), got {type(draw).__name__}")
    if isinstance(settings, (str, bytes, dict)) or not isinstance(settings, Sequence) or len(settings) < 2:
        raise ValueError(f"settings must be a list of at least 2 keyword-argument dicts, got settings={settings!r}")
    if not all(isinstance(s, dict) for s in settings):
        raise ValueError(f"settings must hold dicts of keyword arguments for draw, got settings={settings!r}")
    if isinstance(selected, bool) or not isinstance(selected, int) or not 0 <= selected < len(settings):
        raise ValueError(f"selected must be an int in 0..{len(settings) - 1}, got selected={selected!r}")
    if not enabled:
        return SweepNotRendered(title, len(settings))
    labels, pngs, captions = [], [], []
    for setting in settings:
        label = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items())
        printed = io.StringIO()
        plt.close("all")
        show, plt.show = plt.show, lambda *args, **kwargs: None  # keep the figure open for us to save
        try:
            with contextlib.redirect_stdout(printed):
                draw(**setting)
        finally:
            plt.show = show
        if not plt.get_fignums():
            raise ValueError(f"draw({label}) drew no Matplotlib figure; a static sweep needs one figure per setting")
        png = figure_png(plt.gcf(), dpi)
        plt.close("all")
        labels.append(label)
        pngs.append(png)
        captions.append(printed.getvalue().strip())
    return StaticSweep(title, labels, pngs, captions, selected)

"""What every chapter does first: pick the preset, draw in the book's style, and say so."""

from __future__ import annotations

from . import plots
from .presets import Preset, describe, get_preset


def setup_chapter(name: str | None = None) -> Preset:
    """The preset ``name`` (default: the one ``SGDLAB_PRESET`` names, else ``quick``), ready to use.

    Sets the book's figure style (:func:`sgdlab.plots.use_book_style`) and prints the one
    line that says which preset, device and torch the chapter runs with.
    """
    preset = get_preset(name)
    plots.use_book_style()
    print(describe(preset))
    return preset
